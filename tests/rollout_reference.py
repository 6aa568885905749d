"""The reference rollout the early-exit `rollout` is tested against: a masked scan over the whole horizon.

This is how rollouts ran before they exited early; it is kept here, independent of the package's
loop, so that the rollout's transitions, masks, returns and carries can be compared with it.
"""

import jax
import jax.numpy as jnp

from pderl_jax.buffers.ring import Transition
from pderl_jax.envs.rollout import batched_functions


def masked_scan_rollout(env, key, num_episodes, policy, carry, reset_keys=None):
    """Every episode scanned over the whole horizon, steps after its end masked out.

    Returns (transitions [T, N], valid [T, N], returns [N], final carry), with the keys `rollout`
    uses: initial states from `reset_keys` or split(split(key)[0], N), step t's key
    split(split(key)[1], T)[t].
    """
    reset, step_all = batched_functions(env)
    reset_key, step_key = jax.random.split(key)
    state = reset(jax.random.split(reset_key, num_episodes) if reset_keys is None else reset_keys)
    horizon = env.episode_length

    def body(loop, inputs):
        state, alive, carry = loop
        t, key = inputs
        obs = state.obs
        action, carry = policy(carry, obs, key, alive)
        state, next_obs, reward, terminated = step_all(state, action)
        done = terminated.astype(bool) | (t == horizon - 1)
        step = Transition(state=obs, action=action, next_state=next_obs, reward=jnp.where(alive, reward, 0.0),
                          done=done.astype(jnp.float32),
                          truncated=((t == horizon - 1) & ~terminated.astype(bool)).astype(jnp.float32))
        return (state, alive & ~done, carry), (step, alive)

    inputs = (jnp.arange(horizon), jax.random.split(step_key, horizon))
    (_, _, carry), (steps, valid) = jax.lax.scan(body, (state, jnp.ones(num_episodes, bool), carry), inputs)
    return steps, valid, jnp.sum(steps.reward, axis=0), carry
