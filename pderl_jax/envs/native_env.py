"""The paper's tasks in native MuJoCo through Gymnasium's v5 environments.

The physics runs on the host: a pool of Gymnasium environments is reset and stepped through
ordered `io_callback`s, so the rollout, the policies, the buffers and every learning step stay
inside the one compiled generation; only the MuJoCo steps leave it. All N episodes of a
rollout are stepped together (`batched = True`), one callback per time step.

Episodes are seeded from the JAX key (reproducible runs); an episode that has ended is not
stepped again (its later steps are masked by the rollout anyway). Gymnasium's own time limit is
not used: the rollout's `episode_length` cuts episodes and reports the cut as truncation,
separately from termination.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

from pderl_jax.config import ConfigError, TASKS
from pderl_jax.envs.rollout import Environment

GYMNASIUM_IDS = {
    "swimmer": "Swimmer-v5",
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}


def resolve_task(name: str) -> str:
    """Task name ("halfcheetah") from either a task name or a Gymnasium id ("HalfCheetah-v5")."""
    if name in TASKS:
        return name
    for task, env_id in GYMNASIUM_IDS.items():
        if name.lower() == env_id.lower():
            return task
    raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} "
                      f"(or the Gymnasium ids {', '.join(GYMNASIUM_IDS.values())})")


@struct.dataclass
class HostState:
    obs: jax.Array  # [N, obs_dim]; the simulator state itself lives on the host


class NativeEnvironment(Environment):
    """A Gymnasium MuJoCo task stepped on the host, N episodes at a time."""

    batched = True
    backend = "native"

    def __init__(self, task: str, episode_length: int = 1000, **env_kwargs):
        self.task = resolve_task(task)
        if episode_length <= 0:
            raise ConfigError(f"episode length must be positive, got {episode_length}")
        try:
            import gymnasium
        except ImportError as error:  # pragma: no cover - gymnasium is a core dependency
            raise ConfigError("the gymnasium backend needs `pip install 'gymnasium[mujoco]'`") from error
        self._gymnasium = gymnasium
        self.env_id = GYMNASIUM_IDS[self.task]
        self.description = f"{self.env_id} (native MuJoCo via Gymnasium)"
        self.env_kwargs = self.options = env_kwargs
        self.episode_length = episode_length
        try:
            probe = self._make()
        except TypeError as error:  # an argument the v5 task does not take
            raise ConfigError(f"{self.env_id} rejects the options {env_kwargs}: {error}") from None
        self.obs_dim = int(probe.observation_space.shape[0])
        self.action_dim = int(probe.action_space.shape[0])
        low, high = probe.action_space.low.astype(np.float64), probe.action_space.high.astype(np.float64)
        # Actor outputs lie in [-1, 1]; map them onto the task's action box (identity for these tasks).
        self._action_centre, self._action_half_range = (high + low) / 2, (high - low) / 2
        self._pool = [probe]
        self._alive = np.zeros((0,), bool)
        self._last_obs = np.zeros((0, self.obs_dim), np.float32)

    def _make(self):
        return self._gymnasium.make(self.env_id, **self.env_kwargs).unwrapped

    # ------------------------------------------------------------------ host side
    def _host_reset(self, seeds: np.ndarray) -> np.ndarray:
        n = len(seeds)
        while len(self._pool) < n:
            self._pool.append(self._make())
        obs = np.stack([self._pool[i].reset(seed=int(seeds[i]))[0] for i in range(n)]).astype(np.float32)
        self._alive = np.ones((n,), bool)
        self._last_obs = obs
        return obs

    def _host_step(self, actions: np.ndarray):
        n = len(actions)
        obs = self._last_obs.copy()
        reward = np.zeros((n,), np.float32)
        terminated = ~self._alive
        scaled = self._action_centre + self._action_half_range * np.asarray(actions, np.float64)
        for i in np.flatnonzero(self._alive):
            o, r, term, _, _ = self._pool[i].step(scaled[i])
            obs[i], reward[i], terminated[i] = o, r, term
        self._alive = ~terminated
        self._last_obs = obs
        return obs, reward, terminated.copy()

    # ------------------------------------------------------------------ traced side
    def reset(self, keys: jax.Array) -> HostState:
        seeds = jax.vmap(lambda k: jax.random.randint(k, (), 0, np.iinfo(np.int32).max))(keys)
        shape = jax.ShapeDtypeStruct((keys.shape[0], self.obs_dim), jnp.float32)
        return HostState(obs=io_callback(self._host_reset, shape, seeds, ordered=True))

    def step(self, state: HostState, actions: jax.Array):
        n = actions.shape[0]
        shapes = (jax.ShapeDtypeStruct((n, self.obs_dim), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32),
                  jax.ShapeDtypeStruct((n,), jnp.bool_))
        obs, reward, terminated = io_callback(self._host_step, shapes, actions, ordered=True)
        return HostState(obs=obs), obs, reward, terminated
