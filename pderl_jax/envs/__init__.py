"""Environments and batched rollouts: the Gymnasium MuJoCo v5 tasks (on MJX or native MuJoCo) and brax's tasks."""

from pderl_jax.config import TASKS, ConfigError
from pderl_jax.envs.brax_env import BACKENDS, BraxEnvironment
from pderl_jax.envs.gymnasium_env import GYMNASIUM_IDS, GymnasiumEnvironment, resolve_task
from pderl_jax.envs.rollout import Environment, Rollout, episode_major, rollout


BACKEND_NAMES = ("mjx", "native", "brax")  # "gymnasium" is accepted for "native"


def make_environment(name: str, backend: str | None = None, physics: str = "auto", episode_length: int = 1000):
    """The task `name` on `backend`.

    "mjx": the Gymnasium v5 task on MuJoCo MJX (pure JAX: vmapped, swept, sharded, on GPUs);
    "native" (or "gymnasium"): the same task in native MuJoCo through Gymnasium, stepped on the
    host; "brax": brax's own version of the task, with a brax `physics` pipeline. By default a
    task name (`hopper`) means brax and a Gymnasium id (`Hopper-v5`) the native MuJoCo task.
    """
    task = resolve_task(name)
    if backend is None:
        backend = "brax" if name in TASKS else "native"
    if backend == "brax":
        return BraxEnvironment(task, backend=physics, episode_length=episode_length)
    if backend not in ("mjx", "native", "gymnasium"):
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if physics != "auto":
        raise ConfigError(f"--physics {physics} applies to the brax backend only; drop it for {backend}")
    if backend == "mjx":
        from pderl_jax.envs.mjx_env import MjxEnvironment

        return MjxEnvironment(task, episode_length=episode_length)
    return GymnasiumEnvironment(task, episode_length=episode_length)


__all__ = ["BACKENDS", "BACKEND_NAMES", "BraxEnvironment", "Environment", "GYMNASIUM_IDS", "GymnasiumEnvironment",
           "Rollout", "episode_major", "make_environment", "resolve_task", "rollout"]
