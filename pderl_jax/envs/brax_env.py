"""The paper's five locomotion tasks from `brax.envs`, with a selectable physics backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.config import ConfigError, TASKS

BACKENDS = ("generalized", "positional", "spring", "mjx")


@struct.dataclass
class BraxState:
    pipeline: object  # brax.envs.State
    obs: jax.Array


class BraxEnvironment:
    """A brax task without brax's wrappers: the time limit and masks live in `rollout`."""

    def __init__(self, task: str, backend: str = "spring", episode_length: int = 1000):
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown brax backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if episode_length <= 0:
            raise ConfigError(f"episode length must be positive, got {episode_length}")
        from brax import envs

        self.task = task
        self.backend = backend
        self.episode_length = episode_length
        self._env = envs.get_environment(task, backend=backend)
        self.obs_dim = int(self._env.observation_size)
        self.action_dim = int(self._env.action_size)

    def reset(self, key: jax.Array) -> BraxState:
        state = self._env.reset(key)
        return BraxState(pipeline=state, obs=state.obs)

    def step(self, state: BraxState, action: jax.Array):
        # Actor outputs are tanh-bounded and brax actions are in [-1, 1], as in the gym tasks.
        next_state = self._env.step(state.pipeline, action)
        return BraxState(pipeline=next_state, obs=next_state.obs), next_state.obs, next_state.reward, next_state.done
