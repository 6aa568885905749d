"""Small deterministic counter tasks shared by the rollout, generation and sweep tests."""

import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.envs.rollout import Environment


@struct.dataclass
class CounterState:
    obs: jax.Array
    t: jax.Array
    lifetime: jax.Array


class CounterEnv(Environment):
    """Obs (t/10, lifetime/10, noise); reward 1 + action[0]; terminates after `lifetime` steps."""

    obs_dim, action_dim, episode_length = 3, 1, 10

    def reset(self, key):
        k1, k2 = jax.random.split(key)
        lifetime = jax.random.randint(k1, (), 2, 14).astype(jnp.float32)
        obs = jnp.stack([0.0, lifetime / 10, jax.random.normal(k2)])
        return CounterState(obs=obs, t=jnp.float32(0), lifetime=lifetime)

    def step(self, state, action):
        t = state.t + 1
        obs = jnp.stack([t / 10, state.lifetime / 10, state.obs[2]])
        return CounterState(obs=obs, t=t, lifetime=state.lifetime), obs, 1.0 + action[0], t >= state.lifetime
