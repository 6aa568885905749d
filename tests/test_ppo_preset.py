"""The CleanRL PPO preset: its brax arguments against the source's table, and the wrappers that add what
brax lacks (reward normalisation against a float64 NumPy VecNormalize, fresh resets, clipped actions)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs import base as brax_base
from brax.envs.wrappers.training import VmapWrapper

from pderl_jax.config import ConfigError
from pderl_jax.experiments.ppo_presets import CLEANRL, PPO_PRESETS, get_ppo_preset
from pderl_jax.experiments.ppo_wrappers import ClipAction, NormalizeReward, cleanrl_wrap, return_moments


class Walk(brax_base.Env):
    """A toy brax task: obs = a random start plus the step count; reward = the action's first entry plus 1;
    the episode terminates after `lifetime` steps."""

    def __init__(self, lifetime=3):
        self.lifetime = lifetime

    def reset(self, rng):
        start = jax.random.normal(rng, (2,))
        zero = jnp.zeros(())
        return brax_base.State(pipeline_state={"t": zero, "start": start}, obs=start, reward=zero, done=zero)

    def step(self, state, action):
        t = state.pipeline_state["t"] + 1
        obs = state.pipeline_state["start"] + t
        return state.replace(pipeline_state={**state.pipeline_state, "t": t}, obs=obs, reward=action[0] + 1.0,
                             done=(t >= self.lifetime).astype(jnp.float32))

    @property
    def observation_size(self):
        return 2

    @property
    def action_size(self):
        return 1

    @property
    def backend(self):
        return "toy"


def test_the_preset_holds_the_sources_settings():
    """CleanRL's Args (= Baselines ppo2 mujoco()) as brax arguments; one iteration is 2048 steps."""
    kw = CLEANRL.train_kwargs
    assert kw["num_envs"] == 1 and kw["batch_size"] * kw["num_minibatches"] * kw["unroll_length"] == 2048
    assert kw["num_minibatches"] == 32 and kw["num_updates_per_batch"] == 10
    assert (kw["discounting"], kw["gae_lambda"], kw["clipping_epsilon"], kw["learning_rate"]) == (0.99, 0.95, 0.2, 3e-4)
    assert (kw["entropy_cost"], kw["vf_loss_coefficient"], kw["max_grad_norm"]) == (0.0, 0.5, 0.5)
    assert kw["normalize_observations"] and kw["normalize_advantage"] and kw["clipping_epsilon_value"] == 0.2
    net = CLEANRL.network
    assert net["policy_hidden_layer_sizes"] == net["value_hidden_layer_sizes"] == (64, 64)
    assert (net["activation"], net["distribution_type"], net["noise_std_type"]) == ("tanh", "normal", "log")
    assert math.isclose(net["kernel_init_scale"], math.sqrt(2)) and net["mean_kernel_init_scale"] == 0.01
    assert CLEANRL.reward_normalisation and CLEANRL.reward_clip == 10 and CLEANRL.observation_clip == 10
    assert CLEANRL.clip_actions and "cleanrl" in CLEANRL.source and "baselines" in CLEANRL.source
    assert CLEANRL.fresh_resets and CLEANRL.env_wrappers and not PPO_PRESETS["brax-notebook"].env_wrappers
    assert set(PPO_PRESETS) == {"cleanrl", "cleanrl-brax-loss", "brax-notebook"}
    assert CLEANRL.loss == "cleanrl" and PPO_PRESETS["brax-notebook"].loss == "brax"
    brax_loss = PPO_PRESETS["cleanrl-brax-loss"]  # the same settings, brax's own loss
    assert brax_loss.loss == "brax" and dataclasses.replace(brax_loss, name=CLEANRL.name, summary=CLEANRL.summary,
                                                             loss=CLEANRL.loss) == CLEANRL
    with pytest.raises(ConfigError, match="unknown PPO preset 'sb3'; choose one of cleanrl, cleanrl-brax-loss, brax-notebook"):
        get_ppo_preset("sb3")


def vec_normalize_rewards(rewards: np.ndarray, dones: np.ndarray, gamma: float, clip: float) -> np.ndarray:
    """Baselines' VecNormalize (ret=True) in float64: rewards [T, N], dones [T, N]."""
    count, mean, var = 1e-4, 0.0, 1.0
    ret = np.zeros(rewards.shape[1])
    out = np.zeros_like(rewards)
    for t in range(len(rewards)):
        ret = ret * gamma + rewards[t]
        batch_mean, batch_var, n = ret.mean(), ret.var(), ret.size
        delta = batch_mean - mean
        total = count + n
        mean, var = mean + delta * n / total, (var * count + batch_var * n + delta ** 2 * count * n / total) / total
        count = total
        out[t] = np.clip(rewards[t] / np.sqrt(var + 1e-8), -clip, clip)
        ret[dones[t].astype(bool)] = 0.0
    return out


def test_reward_normalisation_matches_a_numpy_vec_normalize():
    rng = np.random.default_rng()
    n, steps, gamma = 3, 40, float(rng.uniform(0.9, 0.999))
    lifetime, seed = int(rng.integers(2, 6)), int(rng.integers(2**31))
    actions = rng.normal(0, 5, (steps, n, 1)).astype(np.float32)

    def run(clip):
        """(raw rewards, ends, normalised rewards) [steps, n] of the wrapper with `clip`."""
        wrapped = NormalizeReward(VmapWrapper(Walk(lifetime)), gamma, clip=clip)
        state = wrapped.reset(jax.random.split(jax.random.key(seed), n))
        step = jax.jit(wrapped.step)
        raw, ends, normalised = [], [], []
        for t in range(steps):
            inner = wrapped.env.step(state, jnp.asarray(actions[t]))  # the raw reward and end of this step
            state = step(state, jnp.asarray(actions[t]))
            raw.append(np.asarray(inner.reward, np.float64))
            ends.append(np.asarray(inner.done))
            normalised.append(np.asarray(state.reward))
            done = np.asarray(state.done).astype(bool)
            if done.any():  # restart ended episodes by hand (no reset wrapper here)
                fresh = wrapped.env.reset(jax.random.split(jax.random.key(t), n))
                state = state.replace(pipeline_state=jax.tree.map(
                    lambda a, b: jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b),
                    fresh.pipeline_state, state.pipeline_state), done=jnp.zeros(n))
        return np.stack(raw), np.stack(ends), np.stack(normalised)

    raw, ends, unclipped = run(clip=1e9)
    np.testing.assert_allclose(unclipped, vec_normalize_rewards(raw, ends, gamma, clip=1e9), rtol=2e-5, atol=1e-6)
    clip = float(np.median(np.abs(unclipped)))  # half the rewards are clipped
    raw, ends, clipped = run(clip)
    expected = vec_normalize_rewards(raw, ends, gamma, clip)
    np.testing.assert_allclose(clipped, expected, rtol=2e-5, atol=1e-6)
    assert np.isclose(np.abs(expected), clip).mean() > 0.3


def test_return_moments_equal_the_moments_of_all_returns_seen():
    rng = np.random.default_rng()
    batches = [rng.normal(rng.uniform(-3, 3), rng.uniform(0.1, 4), int(rng.integers(1, 6))) for _ in range(7)]
    count, mean, var = 0.0, 0.0, 0.0
    for batch in batches:
        count, mean, var = return_moments(count, mean, var, jnp.asarray(batch, jnp.float64 if jax.config.x64_enabled
                                                                              else jnp.float32))
    everything = np.concatenate(batches)
    assert float(count) == everything.size
    scale = everything.std()  # float32 sums: tolerances relative to the spread (the mean may be near 0)
    np.testing.assert_allclose([float(mean), float(var)], [everything.mean(), everything.var()], rtol=1e-4,
                               atol=1e-4 * scale)


def test_cleanrl_wrapping_clips_actions_restarts_from_fresh_states_and_keeps_the_time_limit():
    env = cleanrl_wrap(Walk(lifetime=3), episode_length=2, action_repeat=1, gamma=0.99, reward_clip=None)
    state = jax.jit(env.reset)(jax.random.split(jax.random.key(0), 2))
    step = jax.jit(env.step)
    starts = [np.asarray(state.obs)]
    for t in range(6):
        state = step(state, jnp.full((2, 1), 7.0))  # clipped to 1: reward 2
        np.testing.assert_allclose(np.asarray(state.reward), 2.0)
        if t % 2 == 1:  # the time limit of 2 steps ends every episode: truncation, then a fresh start
            assert np.asarray(state.done).all() and np.asarray(state.info["truncation"]).all()
            starts.append(np.asarray(state.obs))
        else:
            assert not np.asarray(state.done).any()
    starts = np.concatenate(starts)
    assert len({tuple(np.round(s, 5)) for s in starts}) == len(starts)  # every episode starts afresh
    assert isinstance(ClipAction(Walk()), brax_base.Wrapper)


def test_ppo_returns_are_our_champion_test_of_the_clipped_deterministic_policy():
    """A policy asking for action 3 is clipped to 1 (reward 2 a step on the counter task): the returns are
    those of our rollout of TEST_EPISODES episodes with action 1."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from toy_envs import CounterEnv

    from pderl_jax.envs import rollout
    from pderl_jax.experiments.ppo import test_episodes
    from pderl_jax.training.generation import TEST_EPISODES

    env, key = CounterEnv(), jax.random.key(int(np.random.default_rng().integers(2**31)))
    measured = float(jax.jit(lambda k: test_episodes(env, lambda obs, k: (jnp.full((1,), 3.0), {}), k))(key))
    episodes, _ = rollout(env, key, TEST_EPISODES, lambda c, obs, k, alive: (jnp.ones((obs.shape[0], 1)), c),
                          jnp.zeros(()))
    lengths = np.asarray(episodes.episode_length)
    assert measured == pytest.approx(float(np.asarray(episodes.episode_return).mean()), rel=1e-6)
    assert measured == pytest.approx(2.0 * lengths.mean(), rel=1e-6)



def test_training_return_is_the_mean_raw_return_of_the_last_100_finished_training_episodes():
    """The sources' measure through the whole chain PPO trains on: our CleanRL wrappers (clipped actions,
    fresh starts, rewards normalised) under brax's EpisodeWrapper sums, brax's logger, `TrainingReturns`;
    against the returns summed by hand from the raw rewards (the clipped action + 1 a step on the toy
    task), some episodes ended by the task, others by the time limit, over 100 of them."""
    from brax.training.logger import EpisodeMetricsLogger

    from pderl_jax.experiments.ppo import TrainingReturns
    from pderl_jax.training.metrics import TRAINING_EPISODES

    rng = np.random.default_rng()
    n, lifetime = 4, int(rng.integers(3, 6))
    limit = int(rng.integers(2, 2 * lifetime))  # the time limit or the task ends the episodes, or both do
    env = cleanrl_wrap(Walk(lifetime), episode_length=limit, action_repeat=1, gamma=0.99, reward_clip=0.5)
    steps = (TRAINING_EPISODES // n + 10) * min(limit, lifetime)  # over 100 episodes
    actions = rng.normal(0, 2, (steps, n, 1)).astype(np.float32)
    training = TrainingReturns()
    logger = EpisodeMetricsLogger(steps_between_logging=1, progress_fn=training.update)
    state = jax.jit(env.reset)(jax.random.split(jax.random.key(int(rng.integers(2**31))), n))
    step = jax.jit(env.step)
    running, finished = np.zeros(n), []
    for t in range(steps):
        state = step(state, jnp.asarray(actions[t]))
        assert np.abs(np.asarray(state.reward)).max() <= 0.5 + 1e-6  # PPO learns from normalised rewards
        running += np.clip(actions[t, :, 0].astype(np.float64), -1, 1) + 1.0
        ended = np.asarray(state.info["episode_done"]).astype(bool)
        finished += running[ended].tolist()
        running[ended] = 0.0
        metrics = jax.tree.map(lambda x: np.asarray(x)[None], state.info["episode_metrics"])
        logger.update_episode_metrics(metrics, np.asarray(state.info["episode_done"])[None], {})
    assert len(finished) > TRAINING_EPISODES and not math.isnan(training.latest)
    assert training.latest == pytest.approx(np.mean(finished[-TRAINING_EPISODES:]), rel=1e-5)
    assert training.latest != pytest.approx(np.mean(finished), rel=1e-5)  # the window, not every episode


def test_cleanrl_rows_fall_just_before_the_frame_counts_the_reports_read():
    """brax runs num_evals - 1 epochs of ceil(frames / ((num_evals - 1) * 2048)) iterations (train.py); the
    reports read a curve at its last row at or before 100k, 300k and 1M frames."""
    from pderl_jax.experiments.ppo import evaluations

    frames = 1_000_000
    n = evaluations(CLEANRL, frames)
    per_epoch = math.ceil(frames / ((n - 1) * 2048)) * 2048
    rows = [per_epoch * i for i in range(n)]
    assert per_epoch == 49_152 and rows[-1] >= frames
    gaps = [point - max(r for r in rows if r <= point) for point in (100_000, 300_000, 1_000_000)]
    assert gaps == [1_696, 5_088, 16_960]


def test_cleanrl_runs_recorded_before_its_cleanrl_loss_read_as_cleanrl_brax_loss(tmp_path):
    """Runs (and comparisons resumed) of `cleanrl` written before the preset took CleanRL's loss ran brax's:
    they are labelled, and continue, as cleanrl-brax-loss; newer records name their loss."""
    import json

    from pderl_jax.experiments.compare import read_comparison
    from pderl_jax.presets import recorded_preset, with_preset

    assert recorded_preset({"mode": "ppo", "preset": "cleanrl"}) == "cleanrl-brax-loss"
    assert recorded_preset({"mode": "ppo", "preset": "cleanrl", "loss": "cleanrl"}) == "cleanrl"
    assert recorded_preset({"mode": "ppo"}) == "brax-notebook"  # before PPO presets
    assert with_preset("PPO", "ppo", recorded_preset({"mode": "ppo", "preset": "cleanrl"})) == "PPO @ cleanrl-brax-loss"
    record = {"task": "hopper", "methods": ["ppo"], "seeds": [0], "frames": 100, "overrides": {},
              "presets": {"ppo": "cleanrl"}, "environment": {"name": "hopper", "backend": "mjx", "episode_length": 10}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert read_comparison(tmp_path)["presets"]["ppo"] == "cleanrl"  # nothing run yet: as recorded
    (tmp_path / "ppo" / "run_000").mkdir(parents=True)
    (tmp_path / "ppo" / "run_000" / "config.json").write_text(json.dumps({"mode": "ppo", "preset": "cleanrl"}))
    assert read_comparison(tmp_path)["presets"]["ppo"] == "cleanrl-brax-loss"
    (tmp_path / "ppo" / "run_000" / "config.json").write_text(json.dumps({"mode": "ppo", "preset": "cleanrl",
                                                                           "loss": "cleanrl"}))
    assert read_comparison(tmp_path)["presets"]["ppo"] == "cleanrl"
