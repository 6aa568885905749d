"""The paper's five locomotion tasks from `brax.envs`, with a selectable physics backend."""

from __future__ import annotations

import contextlib
import types
import warnings

import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.config import ConfigError, TASKS
from pderl_jax.envs.rollout import Environment

PHYSICS = ("generalized", "positional", "spring", "mjx")
# Physics pipelines each brax task accepts; "auto" picks the first (the fastest on CPU).
SUPPORTED_PHYSICS = {
    "swimmer": ("generalized",),
    **dict.fromkeys(("halfcheetah", "hopper", "walker2d", "ant"), ("spring", "positional", "generalized", "mjx")),
}


@struct.dataclass
class BraxState:
    pipeline: object  # brax.envs.State
    obs: jax.Array


def _patch_brax_fluid() -> None:
    """brax 0.14 calls `jnp.clip(x, a_min=...)` in its fluid model (Swimmer's viscosity), keywords
    current JAX no longer accepts; give that one module a `clip` that does."""
    from brax import fluid

    if getattr(fluid.jp, "_pderl_compat", False):
        return

    def clip(x, min=None, max=None, *, a_min=None, a_max=None):
        return jnp.clip(x, a_min if min is None else min, a_max if max is None else max)

    compat = types.SimpleNamespace(**{name: getattr(jnp, name) for name in dir(jnp) if not name.startswith("__")})
    compat.clip, compat._pderl_compat = clip, True
    fluid.jp = compat


@contextlib.contextmanager
def _models_on_this_process():
    """brax builds its model with `mjx.put_model(m)`, which places it on `jax.devices()[0]`: process 0's
    device, which the other processes of a multi-process run cannot read. Place it on this process's."""
    from mujoco import mjx

    put_model = mjx.put_model
    if jax.process_count() > 1:
        mjx.put_model = lambda m, device=None, **kwargs: put_model(m, device or jax.local_devices()[0], **kwargs)
    try:
        yield
    finally:
        mjx.put_model = put_model


class BraxEnvironment(Environment):
    """A brax task without brax's wrappers: the time limit and masks live in `rollout`.

    brax warns at every model load that its pipelines are no longer maintained; the README says
    so once (brax's tasks stay here for comparison with brax-based work), so the warning is not shown.
    """

    backend = "brax"

    def __init__(self, task: str, physics: str = "auto", episode_length: int = 1000):
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if physics == "auto":
            physics = SUPPORTED_PHYSICS[task][0]
        if physics not in PHYSICS:
            raise ConfigError(f"unknown brax physics {physics!r}; choose auto or one of {', '.join(PHYSICS)}")
        if physics not in SUPPORTED_PHYSICS[task]:
            raise ConfigError(f"brax {task} does not support the {physics!r} physics; choose auto or one of "
                              f"{', '.join(SUPPORTED_PHYSICS[task])}")
        if episode_length <= 0:
            raise ConfigError(f"episode length must be positive, got {episode_length}")
        from pderl_jax.envs.quiet import import_mjx

        import_mjx()  # before brax imports it
        from brax import envs

        _patch_brax_fluid()
        self.task = task
        self.physics = physics
        self.episode_length = episode_length
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Brax System, piplines", category=UserWarning)
            with _models_on_this_process():
                self._env = envs.get_environment(task, backend=physics)
        # brax's `observation_size` runs reset eagerly (hundreds of tiny compilations, ~250 MB);
        # tracing it abstractly costs nothing.
        self.obs_dim = int(jax.eval_shape(self._env.reset, jax.random.key(0)).obs.shape[-1])
        self.action_dim = int(self._env.action_size)
        self.description = f"brax {task} ({physics} physics)"

    def reset(self, key: jax.Array) -> BraxState:
        state = self._env.reset(key)
        return BraxState(pipeline=state, obs=state.obs)

    def step(self, state: BraxState, action: jax.Array):
        # Actor outputs are tanh-bounded and brax actions are in [-1, 1], as in the gym tasks.
        next_state = self._env.step(state.pipeline, action)
        return BraxState(pipeline=next_state, obs=next_state.obs), next_state.obs, next_state.reward, next_state.done
