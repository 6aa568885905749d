"""Episodes of many policies at once as one batched environment, stepped until all have ended.

An environment here is anything with `obs_dim`, `action_dim`, `episode_length` and two pure
functions, `reset(key) -> state` and `step(state, action) -> (state, obs, reward, terminated)`,
where `state.obs` is the current observation. Such an environment describes one episode and
is vmapped here; an environment with `batched = True` (a host simulator stepped through a
callback) instead takes `reset(keys[N])` and `step(state, actions[N])` for all N episodes at once.

Each of the N parallel episodes runs until it terminates or reaches `episode_length` steps.
The batch is stepped in a `lax.while_loop` that exits once every episode has ended, so a
rollout costs its longest episode, not the horizon: the steps are written into fixed-size
[episode_length, N] buffers whose later rows stay masked out (no reward, frames or stored
transitions). Under `vmap` (sweeps, seeds) the loop runs until the slowest run's episodes end.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from pderl_jax.buffers.ring import Transition

# policy(carry, observations[N, obs], key, alive[N]) -> (actions[N, act], carry); `alive` marks the
# episodes still running, so that a carry (exploration noise) advances only with its own episode.
Policy = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]]


class Environment:
    """Everything the package reads of an environment; a new task subclasses it and sets what differs.

    Required: `obs_dim`, `action_dim`, `episode_length` (the time limit) and the two pure functions.
    The rest has defaults: `batched` (True: a host simulator that steps all N episodes of a rollout
    in one call), `task` and `backend` (recorded in `config.json`, shown in labels), `physics` (brax's
    physics pipeline, recorded when set), `options` (task options, recorded when any) and
    `description` (printed when a run starts)."""

    obs_dim: int
    action_dim: int
    episode_length: int
    batched: bool = False
    task: str = "custom"
    backend: str = "custom"
    physics: str | None = None
    options: dict | None = None
    description: str = "a custom environment"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "task" not in cls.__dict__:  # a task without a name of its own is recorded by its class's
            cls.task = cls.__name__

    def reset(self, key: jax.Array) -> Any:
        """The initial state of one episode (N episodes with N keys when `batched`); `state.obs` is its observation."""
        raise NotImplementedError

    def step(self, state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
        """(state, obs, reward, terminated) after `action`."""
        raise NotImplementedError


def batched_functions(env: Environment):
    """`reset(keys[N])` and `step(state, actions[N])` over N episodes at once."""
    if env.batched:
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

    def episodes(self, start: int, stop: int) -> Rollout:
        """Episodes start..stop-1 of the batch, as a rollout of their own."""
        return Rollout(transitions=jax.tree.map(lambda x: x[:, start:stop], self.transitions),
                       valid=self.valid[:, start:stop], episode_return=self.episode_return[start:stop],
                       episode_length=self.episode_length[start:stop])


def initial_state_keys(key: jax.Array, num_episodes: int) -> jax.Array:
    """The keys of the initial states that `rollout(env, key, num_episodes, ...)` draws."""
    return jax.random.split(jax.random.split(key)[0], num_episodes)


def side_by_side(*groups: tuple[int, Policy]) -> Policy:
    """One policy over consecutive groups of episodes, each group acted by its own policy and carry.

    Batching rollouts that do not depend on each other into one: `groups` are (episodes, policy)
    pairs; the carry is the tuple of the groups' carries, and every group sees only its own
    observations and `alive` flags (and the step's key, which deterministic policies ignore).
    """
    edges = np.cumsum([0] + [n for n, _ in groups]).tolist()

    def policy(carries, obs, key, alive):
        outputs = [group_policy(carry, obs[lo:hi], key, alive[lo:hi])
                   for (_, group_policy), carry, lo, hi in zip(groups, carries, edges[:-1], edges[1:])]
        return jnp.concatenate([actions for actions, _ in outputs]), tuple(carry for _, carry in outputs)

    return policy


def rollout(env: Environment, key: jax.Array, num_episodes: int, policy: Policy, carry: Any,
            reset_keys: jax.Array | None = None) -> tuple[Rollout, Any]:
    """Run `num_episodes` episodes in lockstep; returns the rollout and the final policy carry.

    `reset_keys` [num_episodes] fixes each episode's initial state (common random numbers when
    several policies are compared); by default they are drawn from `key`. Step t's policy key
    is `jax.random.split(step_key, episode_length)[t]`, whenever the loop exits.

    `done` in the stored transitions is the official flag (termination or time limit);
    `truncated` marks episodes cut by the time limit without terminating.
    """
    step_key = jax.random.split(key)[1]
    reset, step_all = batched_functions(env)
    state = reset(initial_state_keys(key, num_episodes) if reset_keys is None else reset_keys)
    horizon = env.episode_length
    step_keys = jax.random.split(step_key, horizon)

    def step(loop):
        t, state, alive, policy_carry, steps, valid = loop
        obs = state.obs
        key_t = lax.dynamic_index_in_dim(step_keys, t, keepdims=False)
        action, policy_carry = policy(policy_carry, obs, key_t, alive)
        state, next_obs, reward, terminated = step_all(state, action)
        terminated = terminated.astype(bool)
        time_limit = t == horizon - 1
        done = terminated | time_limit
        transition = Transition(
            state=obs,
            action=action,
            next_state=next_obs,
            reward=jnp.where(alive, reward, 0.0),
            done=done.astype(jnp.float32),
            truncated=(time_limit & ~terminated).astype(jnp.float32),
        )
        write = lambda buffer, x: lax.dynamic_update_index_in_dim(buffer, x.astype(buffer.dtype), t, 0)
        steps = jax.tree.map(write, steps, transition)
        return t + 1, state, alive & ~done, policy_carry, steps, write(valid, alive)

    def running(loop):
        t, _, alive, *_ = loop
        return jnp.any(alive) & (t < horizon)

    obs = state.obs
    empty = lambda *shape, dtype=obs.dtype: jnp.zeros((horizon, num_episodes, *shape), dtype)
    steps = Transition(state=empty(*obs.shape[1:]), action=empty(env.action_dim), next_state=empty(*obs.shape[1:]),
                       reward=empty(), done=empty(dtype=jnp.float32), truncated=empty(dtype=jnp.float32))
    alive = jnp.ones((num_episodes,), bool)
    loop = (jnp.int32(0), state, alive, carry, steps, jnp.zeros((horizon, num_episodes), bool))
    _, _, _, carry, steps, valid = lax.while_loop(running, step, loop)
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
