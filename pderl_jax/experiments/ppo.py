"""PPO from `brax.training` on the same task (MJX or brax), counted and tested the way our runs are.

The agent is brax's own (`brax.training.agents.ppo.train`), not a reimplementation. It trains on
a `brax.envs.Env`: brax's task itself, or `BraxTaskAdapter` around an MJX task. Its settings come
from a PPO preset (`ppo_presets.py`): by default `cleanrl`, PPO as CleanRL and Baselines run it on
MuJoCo (one environment, 2048-step rollouts, observation and reward normalisation), with the
wrappers of `ppo_wrappers.py`; or `brax-notebook`, the per-task values of brax's training notebook
(tuned for 2048 parallel environments and tens of millions of steps), where `scaled_settings` keeps
every learning setting and shrinks only the batch until the budget holds `MIN_ITERATIONS` iterations.

Frames are environment steps, as for PDERL (brax counts them exactly; an iteration is never cut,
so a run may pass the budget by less than one evaluation interval). Returns are measured like our
champion test, by our own rollout, every evaluation interval: deterministic policy (the mean
action, clipped to the action box), `TEST_EPISODES` episodes, the same episode length,
undiscounted, until termination. Beside it, `training_return` is what Baselines and CleanRL publish:
the mean raw return of the last 100 finished training episodes (sampled actions), from brax's
training-metrics logger.
"""

from __future__ import annotations

import inspect
import json
import math
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
from pderl_jax.experiments.ppo_loss import brax_ppo_loss, cleanrl_loss
from pderl_jax.experiments.ppo_presets import DEFAULT_PPO_PRESET, PpoPreset, get_ppo_preset
from pderl_jax.experiments.ppo_wrappers import wrap_fn
from pderl_jax.training.generation import TEST_EPISODES
from pderl_jax.training.metrics import TRAINING_EPISODES, blank_row, write_metrics
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
PPO_LOSSES = {"brax": None, "cleanrl": cleanrl_loss}  # a preset's `loss`: None keeps brax's own
EVALUATIONS = 10  # brax-notebook: rows per run
# cleanrl: a row every 24 iterations of 2048 steps, so that rows fall just before 100k, 300k and 1M frames
# (98,304, 294,912, 983,040), where the reports read the curves
EVALUATION_INTERVAL = 24 * 2048


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


def preset_settings(preset: PpoPreset, task: str, frames: int) -> dict:
    """brax `ppo.train` arguments of a preset for a task and budget (num_timesteps and num_evals aside)."""
    return scaled_settings(task, frames) if preset.scale_to_budget else dict(preset.train_kwargs)


def evaluations(preset: PpoPreset, frames: int) -> int:
    """How many evaluations (rows) brax runs: the first before training, then one per interval."""
    return EVALUATIONS if preset.scale_to_budget else max(2, math.ceil(frames / EVALUATION_INTERVAL) + 1)


def network_factory(preset: PpoPreset):
    """brax's `make_ppo_networks` with the preset's sizes, activation, distribution and initialisation, and
    normalised observations clipped to +-observation_clip."""
    from brax.training.agents.ppo import networks as ppo_networks

    net = dict(preset.network)
    if not net:
        return ppo_networks.make_ppo_networks
    kwargs = {name: net[name] for name in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes",
                                           "distribution_type", "noise_std_type", "init_noise_std")}
    kwargs["activation"] = {"tanh": jnp.tanh, "relu": jax.nn.relu, "swish": jax.nn.swish}[net["activation"]]
    if net.get("kernel_init") == "orthogonal":
        orthogonal = jax.nn.initializers.orthogonal
        kwargs.update(policy_network_kernel_init_fn=orthogonal, value_network_kernel_init_fn=orthogonal,
                      policy_network_kernel_init_kwargs={"scale": net["kernel_init_scale"]},
                      value_network_kernel_init_kwargs={"scale": net["kernel_init_scale"]},
                      mean_kernel_init_fn=orthogonal, mean_kernel_init_kwargs={"scale": net["mean_kernel_init_scale"]})
    clip = preset.observation_clip

    def make(observation_size, action_size, preprocess_observations_fn, **extra):
        preprocess = preprocess_observations_fn
        if clip is not None:
            preprocess = lambda obs, params: jnp.clip(preprocess_observations_fn(obs, params), -clip, clip)  # noqa: E731
        return ppo_networks.make_ppo_networks(observation_size, action_size, preprocess_observations_fn=preprocess,
                                              **{**kwargs, **extra})

    return make


def train_ppo(env, seed: int, frames: int, out_dir: Path, preset: str = DEFAULT_PPO_PRESET, print_fn=print) -> None:
    """One PPO run: `metrics.csv` (a row per evaluation, our columns) and `config.json` in `out_dir`."""
    environment = brax_training_env(env)
    from brax.training.agents.ppo import train as ppo

    _patch_device_put_replicated()
    chosen = get_ppo_preset(preset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = preset_settings(chosen, env.task, frames)
    (out_dir / "config.json").write_text(json.dumps({
        "task": env.task, "mode": "ppo", "seed": seed, "frames": frames, "preset": chosen.name,
        "ppo": settings, "ppo_network": chosen.network, "reward_normalisation": chosen.reward_normalisation,
        "observation_clip": chosen.observation_clip, "clip_actions": chosen.clip_actions,
        "fresh_resets": chosen.fresh_resets, "loss": chosen.loss,
        "settings_source": chosen.source + (", batch scaled to the budget" if chosen.scale_to_budget else ""),
        "environment": environment_record(env)}, indent=2))
    rows, start = [], time.perf_counter()
    test = _policy_test(env, seed)
    training = TrainingReturns()

    def record(step, make_policy, params):
        value = test(make_policy, params)
        rows.append(blank_row(generation=len(rows) + 1, frames=int(step),
                              wall_s=round(time.perf_counter() - start, 3), champion_test=value, rl_test=value,
                              synced=0, training_return=training.latest))
        print_fn(f"ppo seed {seed}: {int(step)} frames, test {value:.1f}, training episodes "
                 f"{training.latest:.1f} ({rows[-1]['wall_s']:.0f} s)")

    with brax_ppo_loss(PPO_LOSSES[chosen.loss]):
        ppo.train(environment=environment, num_timesteps=frames, episode_length=env.episode_length,
                  num_evals=evaluations(chosen, frames), run_evals=False, seed=seed,
                  log_training_metrics=True, training_metrics_steps=1,
                  policy_params_fn=record, progress_fn=training.update, network_factory=network_factory(chosen),
                  **({"wrap_env_fn": wrap_fn(chosen, settings["discounting"])} if chosen.env_wrappers else {}),
                  **settings)
    rows[-1]["wall_s"] = round(time.perf_counter() - start, 3)
    write_metrics(out_dir, rows)
    # written last: a comparison resumed later keeps the runs that have one
    (out_dir / "summary.json").write_text(json.dumps({
        "frames": rows[-1]["frames"], "wall_s": rows[-1]["wall_s"], "final_champion_test": rows[-1]["champion_test"],
        "best_champion_test": max(r["champion_test"] for r in rows),
        "final_training_return": rows[-1]["training_return"], "preset": chosen.name}, indent=2))
    print_fn(f"ppo seed {seed} ({chosen.name}): {rows[-1]['frames']} frames, final test {rows[-1]['champion_test']:.1f}")


class TrainingReturns:
    """brax's `progress_fn` while it logs training metrics: keeps the mean return of the last
    TRAINING_EPISODES finished training episodes (brax's logger keeps as many; the returns are summed by
    its EpisodeWrapper before any reward normalisation), NaN until an episode finishes."""

    def __init__(self):
        from brax.training.logger import EpisodeMetricsLogger

        kept = inspect.signature(EpisodeMetricsLogger).parameters["buffer_size"].default
        if kept != TRAINING_EPISODES:
            raise RuntimeError(f"brax's training logger keeps the last {kept} episodes, not {TRAINING_EPISODES}")
        self.latest = math.nan

    def update(self, step, metrics) -> None:
        if "episode/sum_reward" in metrics:
            self.latest = float(metrics["episode/sum_reward"])


def _policy_test(env, seed: int):
    """`test(make_policy, params)`: our champion test of a brax policy, compiled once per `make_policy`."""
    compiled = {}

    def test(make_policy, params) -> float:
        if id(make_policy) not in compiled:
            compiled[id(make_policy)] = jax.jit(
                lambda p, key: test_episodes(env, make_policy(p, deterministic=True), key))
        return float(compiled[id(make_policy)](params, jax.random.key(seed + 10_007)))

    return test


def test_episodes(env, policy, key) -> jax.Array:
    """Mean return of TEST_EPISODES deterministic episodes of a brax.training policy (our rollout), its
    actions clipped to the action box; traceable."""
    def act(carry, obs, step_key, alive):
        actions, _ = jax.vmap(policy, in_axes=(0, None))(obs, step_key)
        return jnp.clip(actions, -1.0, 1.0), carry

    episodes, _ = rollout(env, key, TEST_EPISODES, act, jnp.zeros(()))
    return episodes.episode_return.mean()


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
