"""Environments and batched rollouts: the Gymnasium MuJoCo v5 tasks (on MJX or native MuJoCo) and brax's tasks."""

from pderl_jax.envs import quiet  # noqa: F401  (MuJoCo's warnings once each; MJX imported without warp notices)
from pderl_jax.config import ConfigError
from pderl_jax.envs.brax_env import BraxEnvironment
from pderl_jax.envs.native_env import GYMNASIUM_IDS, NativeEnvironment, resolve_task
from pderl_jax.envs.rollout import Environment, Rollout, episode_major, rollout

BACKENDS = ("mjx", "native", "brax")  # (runs recorded before 0.8 name native "gymnasium")

# The faster backend of a single run on CPU, from `benchmarks/generation.py --backends mjx,native,brax`
# (PDERL at paper settings on HalfCheetah-v5, 2 CPU cores; benchmarks/results/
# generation_halfcheetah_pop10_backends.json): a generation took 30.0 s on native MuJoCo and 41.4 s
# on MJX (population rollouts 0.8 s against 5.0 s; the learner updates cost the same on both), and
# compiled in 12 s against 50 s. On an accelerator MJX keeps the physics beside the networks.
CPU_SINGLE_RUN_BACKEND = "native"
CPU_SINGLE_RUN_REASON = ("a single run on CPU: native MuJoCo steps the task faster than MJX there "
                         "(benchmarks/generation.py)")


def choose_backend(backend: str | None = None, physics: str = "auto", vmapped: bool = False) -> tuple[str, str]:
    """(backend, why): the one asked for, else the fastest correct one for what is run.

    A brax `physics` pipeline means brax; runs vmapped together (sweeps, comparisons) need JAX physics
    (MJX); on a GPU or TPU, MJX; a single run on CPU, the one the generation benchmark found faster.
    """
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return backend, "as asked (--backend)"
    if physics != "auto":
        return "brax", f"--physics {physics} is a brax physics pipeline"
    if vmapped:
        return "mjx", "its runs are vmapped together, which needs JAX physics"
    import jax

    platform = jax.default_backend()
    if platform != "cpu":
        return "mjx", f"on {platform.upper()} the physics runs beside the networks"
    return CPU_SINGLE_RUN_BACKEND, CPU_SINGLE_RUN_REASON


MJX_ONLY_OPTIONS = ("contact_frames", "solver_iterations", "ls_iterations")


def make_environment(name: str, backend: str | None = None, physics: str = "auto", episode_length: int = 1000,
                     options: dict | None = None):
    """The task `name` ("hopper" or "Hopper-v5") on `backend`.

    "mjx": the Gymnasium v5 task on MuJoCo MJX (pure JAX: vmapped, swept, sharded, on GPUs);
    "native": the same task in native MuJoCo through Gymnasium, stepped on the
    host; "brax": brax's own version of the task, with a brax `physics` pipeline. Without a
    backend, `choose_backend` picks one for a single run. `options` are the v5 task's keyword
    arguments (`ctrl_cost_weight`, `healthy_z_range`, ...), and on MJX also its own
    (`contact_frames`, `solver_iterations`, `ls_iterations`).
    """
    task = resolve_task(name)
    backend, _ = choose_backend(backend, physics)
    options = dict(options or {})
    if backend == "brax":
        if options:
            raise ConfigError(f"brax's tasks take no environment options ({', '.join(options)}); they are options "
                              "of the Gymnasium v5 tasks: use --backend mjx or native")
        return BraxEnvironment(task, physics=physics, episode_length=episode_length)
    if physics != "auto":
        raise ConfigError(f"--physics {physics} applies to the brax backend only; drop it for {backend}")
    if backend == "mjx":
        from pderl_jax.envs.mjx_env import MjxEnvironment

        return MjxEnvironment(task, episode_length=episode_length, **options)
    mjx_only = [name for name in options if name in MJX_ONLY_OPTIONS]
    if mjx_only:
        raise ConfigError(f"{', '.join(mjx_only)}: options of the MJX backend only (native MuJoCo steps as MuJoCo "
                          "does); use --backend mjx or drop them")
    return NativeEnvironment(task, episode_length=episode_length, **options)


__all__ = ["BACKENDS", "BraxEnvironment", "Environment", "GYMNASIUM_IDS", "NativeEnvironment",
           "Rollout", "choose_backend", "episode_major", "make_environment", "resolve_task", "rollout"]
