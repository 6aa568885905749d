"""Environments and batched rollouts: brax tasks (JAX physics) and Gymnasium MuJoCo v5 tasks."""

from pderl_jax.config import TASKS, ConfigError
from pderl_jax.envs.brax_env import BACKENDS, BraxEnvironment
from pderl_jax.envs.gymnasium_env import GYMNASIUM_IDS, GymnasiumEnvironment, resolve_task
from pderl_jax.envs.rollout import Environment, Rollout, episode_major, rollout


def make_environment(name: str, backend: str | None = None, physics: str = "auto", episode_length: int = 1000):
    """The task `name` on `backend`: "brax" with a physics pipeline, or "gymnasium". By default a
    task name (`hopper`) means brax and a Gymnasium id (`Hopper-v5`) the native MuJoCo task."""
    task = resolve_task(name)
    if backend is None:
        backend = "brax" if name in TASKS else "gymnasium"
    if backend == "brax":
        return BraxEnvironment(task, backend=physics, episode_length=episode_length)
    if backend == "gymnasium":
        if physics != "auto":
            raise ConfigError(f"--physics {physics} applies to the brax backend only; drop it for gymnasium")
        return GymnasiumEnvironment(task, episode_length=episode_length)
    raise ConfigError(f"unknown backend {backend!r}; choose brax or gymnasium")


__all__ = ["BACKENDS", "BraxEnvironment", "Environment", "GYMNASIUM_IDS", "GymnasiumEnvironment", "Rollout",
           "episode_major", "make_environment", "resolve_task", "rollout"]
