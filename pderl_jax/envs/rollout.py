"""Episodes of many policies at once as one batched environment inside one `lax.scan`.

An environment here is anything with `obs_dim`, `action_dim`, `episode_length` and two pure
functions, `reset(key) -> state` and `step(state, action) -> (state, obs, reward, terminated)`,
where `state.obs` is the current observation. Such an environment describes one episode and
is vmapped here; an environment with `batched = True` (a host simulator stepped through a
callback) instead takes `reset(keys[N])` and `step(state, actions[N])` for all N episodes at once.
Each of the N parallel episodes runs until it terminates or reaches `episode_length` steps;
after that its steps are masked out, so they add neither reward nor frames nor stored
transitions.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from pderl_jax.buffers.ring import Transition

# policy(carry, observations[N, obs], key) -> (actions[N, act], carry)
Policy = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


class Environment(Protocol):
    obs_dim: int
    action_dim: int
    episode_length: int

    def reset(self, key: jax.Array) -> Any: ...

    def step(self, state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]: ...


def batched_functions(env: Environment):
    """`reset(keys[N])` and `step(state, actions[N])` over N episodes at once."""
    if getattr(env, "batched", False):
        return env.reset, env.step
    return jax.vmap(env.reset), jax.vmap(env.step)


@struct.dataclass
class Rollout:
    """N episodes: transitions in time-major order with a validity mask, and per-episode totals."""

    transitions: Transition  # leaves [T, N, ...]
    valid: jax.Array  # [T, N] the step belongs to a running episode
    episode_return: jax.Array  # [N] undiscounted return
    episode_length: jax.Array  # [N] stored steps = frames

    @property
    def frames(self) -> jax.Array:
        return jnp.sum(self.episode_length)


def rollout(env: Environment, key: jax.Array, num_episodes: int, policy: Policy, carry: Any,
            reset_keys: jax.Array | None = None) -> tuple[Rollout, Any]:
    """Run `num_episodes` episodes in lockstep; returns the rollout and the final policy carry.

    `reset_keys` [num_episodes] fixes each episode's initial state (common random numbers when
    several policies are compared); by default they are drawn from `key`.

    `done` in the stored transitions is the official flag (termination or time limit);
    `truncated` marks episodes cut by the time limit without terminating.
    """
    reset_key, step_key = jax.random.split(key)
    reset, step_all = batched_functions(env)
    state = reset(jax.random.split(reset_key, num_episodes) if reset_keys is None else reset_keys)
    horizon = env.episode_length

    def body(scan_carry, inputs):
        state, alive, policy_carry = scan_carry
        t, key = inputs
        obs = state.obs
        action, policy_carry = policy(policy_carry, obs, key)
        state, next_obs, reward, terminated = step_all(state, action)
        terminated = terminated.astype(bool)
        time_limit = t == horizon - 1
        done = terminated | time_limit
        step = Transition(
            state=obs,
            action=action,
            next_state=next_obs,
            reward=jnp.where(alive, reward, 0.0),
            done=done.astype(jnp.float32),
            truncated=(time_limit & ~terminated).astype(jnp.float32),
        )
        return (state, alive & ~done, policy_carry), (step, alive)

    alive = jnp.ones((num_episodes,), bool)
    inputs = (jnp.arange(horizon), jax.random.split(step_key, horizon))
    (_, _, carry), (steps, valid) = lax.scan(body, (state, alive, carry), inputs)
    result = Rollout(
        transitions=steps,
        valid=valid,
        episode_return=jnp.sum(steps.reward, axis=0),
        episode_length=jnp.sum(valid, axis=0).astype(jnp.int32),
    )
    return result, carry


def episode_major(rollout: Rollout, groups: int) -> tuple[Transition, jax.Array]:
    """Transitions regrouped as [groups, episodes_per_group * T, ...] in official storage order.

    Episode e of group g is `rollout` column g * episodes_per_group + e; within a group the
    episodes follow each other, as when the official code runs a member's trials in sequence.
    """
    steps, num_episodes = rollout.valid.shape
    per_group = num_episodes // groups

    def regroup(x):
        x = jnp.swapaxes(x, 0, 1)  # [N, T, ...]
        return x.reshape(groups, per_group * steps, *x.shape[2:])

    return jax.tree.map(regroup, rollout.transitions), regroup(rollout.valid)
