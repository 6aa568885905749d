"""PPO from `brax.training` on the same task (MJX or brax), counted and tested the way our runs are.

The agent is brax's own (`brax.training.agents.ppo.train`), not a reimplementation. It trains on
a `brax.envs.Env`: brax's task itself, or `BraxTaskAdapter` around an MJX task (brax's training
wrappers then add the time limit and automatic resets, as for brax's tasks). Its settings
are the per-task values of brax's training notebook (google/brax `notebooks/training.ipynb`,
tuned for 2048 parallel environments and tens of millions of steps). A short budget cannot hold
one of those iterations (HalfCheetah: 327,680 steps each), so `scaled_settings` keeps every
learning setting and shrinks only the batch (and with it the number of parallel environments) until
the budget holds `MIN_ITERATIONS` iterations.

Frames are environment steps, as for PDERL (brax reports them exactly; an iteration is never cut,
so a run may pass the budget by less than one evaluation interval). Returns are measured like our
champion test: deterministic policy (the mean action), `TEST_EPISODES` episodes, the same episode
length, undiscounted, until termination.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pderl_jax.config import ConfigError
from pderl_jax.envs.brax_env import BraxEnvironment
from pderl_jax.envs.quiet import import_mjx
from pderl_jax.envs.rollout import rollout
from pderl_jax.training.generation import TEST_EPISODES
from pderl_jax.training.metrics import blank_row, write_metrics
from pderl_jax.training.run_folder import environment_record

import_mjx()  # before brax imports it
from brax.envs import base as brax_base  # noqa: E402

# brax training notebook (notebooks/training.ipynb), its PPO cells; num_timesteps and num_evals are
# set by the comparison. The notebook trains hopper and walker2d with SAC and has no swimmer, so
# those use its common PPO cell for locomotion (that of ant, inverted_pendulum, ...: reward scale 10,
# unroll 5, 4 updates per batch, discount 0.97, entropy 1e-2) with 2048 environments and batch 1024.
_LOCOMOTION = dict(reward_scaling=10, normalize_observations=True, action_repeat=1, unroll_length=5,
                   num_minibatches=32, num_updates_per_batch=4, discounting=0.97, learning_rate=3e-4,
                   entropy_cost=1e-2, num_envs=2048, batch_size=1024)
BRAX_NOTEBOOK_SETTINGS = {
    "halfcheetah": dict(reward_scaling=1, normalize_observations=True, action_repeat=1, unroll_length=20,
                        num_minibatches=32, num_updates_per_batch=8, discounting=0.95, learning_rate=3e-4,
                        entropy_cost=0.001, num_envs=2048, batch_size=512),
    "ant": {**_LOCOMOTION, "num_envs": 4096, "batch_size": 2048},
    "hopper": _LOCOMOTION,
    "walker2d": _LOCOMOTION,
    "swimmer": _LOCOMOTION,
}
MIN_ITERATIONS = 20
EVALUATIONS = 10


def scaled_settings(task: str, frames: int) -> dict:
    """The notebook's settings with the batch halved (to at least 1) until `frames` hold MIN_ITERATIONS."""
    settings = dict(BRAX_NOTEBOOK_SETTINGS[task])
    per_iteration = lambda s: s["batch_size"] * s["num_minibatches"] * s["unroll_length"]
    while settings["batch_size"] > 1 and per_iteration(settings) * MIN_ITERATIONS > frames:
        settings["batch_size"] //= 2
    # brax needs batch_size * num_minibatches to be a multiple of num_envs
    settings["num_envs"] = min(settings["num_envs"], settings["batch_size"] * settings["num_minibatches"])
    return settings


def _patch_device_put_replicated() -> None:
    """brax 0.14's PPO calls `jax.device_put_replicated`, which current JAX removed; give it the documented
    drop-in replacement (the value stacked once per device, the stack split over those devices)."""
    if hasattr(jax, "device_put_replicated"):
        return

    def device_put_replicated(value, devices):
        sharding = NamedSharding(Mesh(np.asarray(devices), ("d",)), PartitionSpec("d"))
        return jax.device_put(jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * len(devices)), value), sharding)

    jax.device_put_replicated = device_put_replicated


def brax_training_env(env):
    """The `brax.envs.Env` that brax's PPO trains on: brax's task, or an MJX task adapted."""
    if isinstance(env, BraxEnvironment):
        return env._env
    if env.backend == "mjx":
        return BraxTaskAdapter(env)
    raise ConfigError("PPO comes from brax.training and needs JAX physics; use --backend mjx or brax")


def train_ppo(env, seed: int, frames: int, out_dir: Path, print_fn=print) -> None:
    """One PPO run: `metrics.csv` (a row per evaluation, our columns) and `config.json` in `out_dir`."""
    environment = brax_training_env(env)
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    _patch_device_put_replicated()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = scaled_settings(env.task, frames)
    (out_dir / "config.json").write_text(json.dumps({
        "task": env.task, "mode": "ppo", "seed": seed, "frames": frames, "ppo": settings,
        "settings_source": "brax notebooks/training.ipynb, batch scaled to the budget",
        "environment": environment_record(env)}, indent=2))
    rows, start = [], time.perf_counter()

    def progress(step, metrics):
        if "eval/episode_reward" in metrics:
            value = float(metrics["eval/episode_reward"])
            rows.append(blank_row(generation=len(rows) + 1, frames=int(step),
                                  wall_s=round(time.perf_counter() - start, 3), champion_test=value, rl_test=value,
                                  synced=0))

    make_policy, params, _ = ppo.train(
        environment=environment, num_timesteps=frames, episode_length=env.episode_length, num_evals=EVALUATIONS,
        num_eval_envs=TEST_EPISODES, deterministic_eval=True, seed=seed, progress_fn=progress,
        network_factory=ppo_networks.make_ppo_networks, **settings)
    final = test_policy(env, make_policy(params, deterministic=True), jax.random.key(seed + 10_007))
    rows[-1]["champion_test"] = rows[-1]["rl_test"] = final  # the final test, measured like ours
    rows[-1]["wall_s"] = round(time.perf_counter() - start, 3)
    write_metrics(out_dir, rows)
    print_fn(f"ppo seed {seed}: {rows[-1]['frames']} frames, final test {final:.1f}")


def test_policy(env, policy, key) -> float:
    """Mean return of TEST_EPISODES deterministic episodes of a brax.training policy (our rollout)."""
    def act(carry, obs, step_key, alive):
        actions, _ = jax.vmap(policy, in_axes=(0, None))(obs, step_key)
        return actions, carry

    episodes, _ = jax.jit(lambda k: rollout(env, k, TEST_EPISODES, act, jnp.zeros(())))(key)
    return float(episodes.episode_return.mean())


class BraxTaskAdapter(brax_base.Env):
    """One of our JAX tasks (reset(key) -> state, step(state, action) -> (state, obs, reward, terminated))
    as a `brax.envs.Env`; the task's state is brax's `pipeline_state`."""

    def __init__(self, task):
        self.task = task

    def reset(self, rng: jax.Array) -> brax_base.State:
        state = self.task.reset(rng)
        zero = jnp.zeros((), jnp.float32)
        return brax_base.State(pipeline_state=state, obs=state.obs, reward=zero, done=zero)

    def step(self, state: brax_base.State, action: jax.Array) -> brax_base.State:
        inner, obs, reward, terminated = self.task.step(state.pipeline_state, action)
        return state.replace(pipeline_state=inner, obs=obs, reward=reward, done=terminated.astype(jnp.float32))

    @property
    def observation_size(self) -> int:
        return self.task.obs_dim

    @property
    def action_size(self) -> int:
        return self.task.action_dim

    @property
    def backend(self) -> str:
        return self.task.backend
