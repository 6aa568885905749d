"""Learner presets and what they need: the TD3 authors' settings, concatenated ReLU critics, the
random warm-up, bootstrapped timeouts, clipping off at 0, and the official preset unchanged.

References are independent of the code under test: the TD3 authors' values written out from
their 2018 code, float64 NumPy forward passes, and metrics recorded before presets existed.
"""

from __future__ import annotations

from pderl_jax.envs.rollout import Environment

import json
import sys
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest
from flax import struct
from scipy import stats

from pderl_jax.buffers.ring import Transition
from pderl_jax.config import ConfigError, LearnerConfig, NetworkConfig, from_dict, load_config, to_dict
from pderl_jax.learner.off_policy import Learner, clip_grad_norm
from pderl_jax.networks import init_critic, make_critic
from pderl_jax.training import Trainer

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from make_official_metrics import COLUMNS, official_metrics  # noqa: E402


def fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


# ----------------------------------------------------------------------------- the presets' values
# sfujim/TD3 at bc98e62 (2018): TD3.py, main.py and run_experiments.sh, written out by hand.
TD3_AUTHORS_2018 = {
    "network.actor_hidden": (400, 300), "network.actor_activation": "relu", "network.critic_layout": "concat",
    "network.critic_hidden": (400, 300), "network.critic_activation": "relu", "network.use_layer_norm": False,
    "network.rl_actor_output_scale": 1.0, "network.critic_output_scale": 1.0,
    "learner.algorithm": "td3", "learner.actor_lr": 1e-3, "learner.critic_lr": 1e-3, "learner.batch_size": 100,
    "learner.tau": 0.005, "learner.gamma": 0.99, "learner.policy_delay": 2, "learner.policy_noise": 0.2,
    "learner.noise_clip": 0.5, "learner.exploration": "gaussian", "learner.gaussian_noise_std": 0.1,
    "learner.bootstrap_on_timeout": True, "learner.grad_clip_norm": 0.0, "learner.updates_per_frame": 1.0,
}
START_TIMESTEPS_2018 = {"halfcheetah": 10_000, "ant": 10_000, "hopper": 1_000, "walker2d": 1_000, "swimmer": 1_000}


def setting(config, dotted):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


@pytest.mark.parametrize("task", sorted(START_TIMESTEPS_2018))
def test_mode_td3_trains_the_authors_td3_by_default(task):
    config = load_config(task, {"mode": "td3"})
    assert config.preset == "td3-2018"
    for dotted, value in TD3_AUTHORS_2018.items():
        assert setting(config, dotted) == value, dotted
    assert config.learner.warmup_frames == START_TIMESTEPS_2018[task]
    assert config.learner.learning_starts == config.learner.batch_size  # trains from the first episodes on


def test_official_stays_the_default_of_every_other_mode():
    defaults = load_config("halfcheetah", {"preset": "official"})
    for mode in ("pderl", "perl", "derl", "erl", "ddpg"):
        config = load_config("halfcheetah", {"mode": mode})
        assert config.preset == "official" and config.learner.algorithm == "ddpg"
        assert config.network == defaults.network and config.learner == defaults.learner
    assert defaults.learner.warmup_frames == 0 and defaults.learner.grad_clip_norm == 10.0
    # the official preset with --learner td3 is the old `--mode td3`: TD3's update, DDPG's settings
    old_td3 = load_config("halfcheetah", {"mode": "td3", "preset": "official"})
    assert old_td3.learner.algorithm == "td3" and old_td3.learner.actor_lr == 5e-5 and old_td3.network == defaults.network


def test_presets_give_way_to_set_and_are_recorded(tmp_path):
    config = load_config("hopper", {"mode": "pderl", "preset": "td3-2018", "learner.actor_lr": 3e-4,
                                    "network.actor_hidden": "64,64"})
    assert config.learner.algorithm == "td3" and config.learner.actor_lr == 3e-4 and config.learner.critic_lr == 1e-3
    assert config.network.actor_hidden == (64, 64) and config.network.actor_activation == "relu"
    record = to_dict(config)
    assert record["preset"] == "td3-2018"
    assert from_dict(json.loads(json.dumps(record))) == config  # a config.json loads back as it ran
    # a record written before presets (no "preset") is the official one
    old = to_dict(load_config("hopper"))
    del old["preset"]
    assert from_dict(old) == load_config("hopper")
    # a config file names a preset and overrides single values of it
    toml = tmp_path / "mine.toml"
    toml.write_text('task = "halfcheetah"\npreset = "td3-2018"\n[learner]\nbatch_size = 256\n')
    with open(toml, "rb") as f:
        from_file = from_dict(tomllib.load(f))
    assert from_file.learner.batch_size == 256 and from_file.learner.warmup_frames == 10_000
    assert from_file.network.critic_layout == "concat"


@pytest.mark.parametrize("overrides, message", [
    ({"preset": "td4"}, "unknown preset 'td4'; choose one of official, td3-2018"),
    ({"mode": "ddpg", "preset": "td3-2018"}, "pick a ddpg preset (official, ourddpg-2018"),
    ({"network.critic_layout": "dense"}, "network.critic_layout = 'dense' is not allowed; choose one of split, concat"),
    ({"network.actor_activation": "gelu"}, "choose one of tanh, relu, elu"),
    ({"network.critic_hidden": "0,300"}, "network.critic_hidden = [0, 300] must be a non-empty list"),
    ({"learner.warmup_frames": -1}, "learner.warmup_frames = -1 must be >= 0"),
    ({"network.critic_output_scale": 0.0}, "network.critic_output_scale = 0.0 must be > 0"),
])
def test_bad_preset_settings_name_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("hopper", overrides)


def test_every_preset_is_a_valid_config_on_every_task_with_sources():
    from pderl_jax.presets import PRESETS

    for name, preset in PRESETS.items():
        for task in START_TIMESTEPS_2018:
            mode = preset.algorithm or "pderl"
            config = load_config(task, {"mode": mode, "preset": name})
            for dotted, value in preset.settings(task).items():
                assert setting(config, dotted) == value, (name, dotted)
        assert all(preset.sources.get(dotted) for dotted in preset.settings("hopper")), name


# ----------------------------------------------------------------------------- the official preset unchanged
@pytest.mark.parametrize("mode", ["pderl", "td3"])
def test_official_preset_reproduces_the_metrics_recorded_before_presets(mode):
    """Four generations as the code before presets computed them, to float32 rounding; with another
    jaxlib than the one that recorded them (XLA's rounding differs and training amplifies it), the
    first generation, before any learner update reaches a test, to 1e-4."""
    record = json.loads((DATA / "official_metrics.json").read_text())
    recorded, same_jaxlib = record[mode], record["recorded_with"]["jaxlib"] == jaxlib.__version__
    now = official_metrics(mode)
    assert now["frames"] == recorded["frames"]
    rows = slice(None) if same_jaxlib else slice(0, 1)
    for name in COLUMNS:
        np.testing.assert_allclose(np.asarray(now[name], np.float64)[rows], np.asarray(recorded[name], np.float64)[rows],
                                   rtol=1e-6 if same_jaxlib else 1e-4, atol=1e-6, err_msg=f"{mode} {name}")


# ----------------------------------------------------------------------------- networks
def relu(x):
    return np.maximum(x, 0.0)


def mlp_np(layers, x, hidden):
    """float64 [Linear -> hidden]* -> Linear over flax-layout params named w_l1.. and w_out."""
    h = np.asarray(x, np.float64)
    i = 1
    while f"w_l{i}" in layers:
        h = hidden(h @ np.asarray(layers[f"w_l{i}"]["kernel"], np.float64) + np.asarray(layers[f"w_l{i}"]["bias"]))
        i += 1
    return h @ np.asarray(layers["w_out"]["kernel"], np.float64) + np.asarray(layers["w_out"]["bias"], np.float64)


def test_concatenated_relu_twin_critic_matches_numpy():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    obs_dim, action_dim, widths = int(rng.integers(3, 12)), int(rng.integers(1, 7)), (int(rng.integers(5, 40)), 7)
    network = NetworkConfig(critic_layout="concat", critic_hidden=widths, critic_activation="relu",
                            use_layer_norm=False, critic_output_scale=1.0)
    critic = make_critic(network, twin=True)
    params = init_critic(jax.random.key(seed), critic, obs_dim, action_dim)
    states = rng.normal(size=(9, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(9, action_dim)).astype(np.float32)
    q = np.asarray(critic.apply({"params": params}, jnp.asarray(states), jnp.asarray(actions)))
    assert q.shape == (2, 9)
    x = np.concatenate([states, actions], axis=1)
    heads = params["critics"]
    first = mlp_np(jax.tree.map(lambda a: np.asarray(a[0]), heads), x, relu)[:, 0]
    second = mlp_np(jax.tree.map(lambda a: np.asarray(a[1]), heads), x, relu)[:, 0]
    np.testing.assert_allclose(q[0], first, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
    np.testing.assert_allclose(q[1], second, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
    assert not np.allclose(first, second)  # two independently initialised heads
    # PyTorch's default init: U(+-1/sqrt(fan_in)) for the first layer's weights and biases
    bound = 1 / np.sqrt(obs_dim + action_dim)
    kernel = np.asarray(heads["w_l1"]["kernel"])
    assert kernel.shape == (2, obs_dim + action_dim, widths[0]) and np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.8 * bound
    # the actor loss and the Q-filter use the first head
    learner = Learner(obs_dim, action_dim, LearnerConfig(algorithm="td3"), network)
    np.testing.assert_allclose(np.asarray(learner.q1(params, jnp.asarray(states), jnp.asarray(actions))), q[0],
                               rtol=1e-6)


# ----------------------------------------------------------------------------- timeouts and clipping
def test_td3_2018_target_bootstraps_a_timeout_and_stops_at_a_true_terminal():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    config = load_config("hopper", {"mode": "td3", "network.actor_hidden": "16,8", "network.critic_hidden": "12,6",
                                    "learner.policy_noise": 0.0})
    obs_dim, action_dim, gamma = 5, 3, config.learner.gamma
    learner = Learner(obs_dim, action_dim, config.learner, config.network)
    state = learner.init(jax.random.key(seed))
    # done: terminal, time limit, time limit, running
    done = np.array([1, 1, 1, 0], np.float32)
    truncated = np.array([0, 1, 1, 0], np.float32)
    batch = Transition(state=rng.normal(size=(4, obs_dim)).astype(np.float32),
                       action=rng.uniform(-1, 1, (4, action_dim)).astype(np.float32),
                       next_state=rng.normal(size=(4, obs_dim)).astype(np.float32),
                       reward=rng.normal(size=4).astype(np.float32), done=done, truncated=truncated)
    target = np.asarray(learner.critic_target(state, jax.tree.map(jnp.asarray, batch), jax.random.key(1),
                                              config.learner))
    actor = jax.tree.map(np.asarray, state.actor_target)
    next_action = np.tanh(mlp_np(actor, batch.next_state, relu))
    x = np.concatenate([batch.next_state, next_action], axis=1)
    heads = state.critic_target["critics"]
    q = np.minimum(*(mlp_np(jax.tree.map(lambda a: np.asarray(a[i]), heads), x, relu)[:, 0] for i in (0, 1)))
    r = batch.reward.astype(np.float64)
    expected = np.array([r[0], r[1] + gamma * q[1], r[2] + gamma * q[2], r[3] + gamma * q[3]])
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
    assert abs(q[1]) > 1e-3  # the bootstrap term is not vanishingly small


def test_gradient_clipping_is_off_at_zero():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    grads = {"a": jnp.asarray(rng.normal(0, 50, (7, 3)), jnp.float32), "b": jnp.asarray(rng.normal(0, 50, 4),
                                                                                       jnp.float32)}
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads.values()))
    unclipped = clip_grad_norm(grads, jnp.float32(0.0))
    for name in grads:
        np.testing.assert_array_equal(np.asarray(unclipped[name]), np.asarray(grads[name]))
    clipped = clip_grad_norm(grads, jnp.float32(1.5))  # torch: g * 1.5 / (norm + 1e-6)
    for name in grads:
        np.testing.assert_allclose(np.asarray(clipped[name]), np.asarray(grads[name], np.float64) * 1.5 / (norm + 1e-6),
                                   rtol=1e-5, err_msg=f"seed {seed}")


# ----------------------------------------------------------------------------- the random warm-up
@struct.dataclass
class DriftState:
    obs: jax.Array
    t: jax.Array


class DriftEnv(Environment):
    """Never terminates; observations drift with the actions (so the actor's outputs vary)."""

    obs_dim, action_dim, episode_length = 3, 4, 25

    def reset(self, key):
        return DriftState(obs=jax.random.normal(key, (3,)), t=jnp.int32(0))

    def step(self, state, action):
        obs = 0.9 * state.obs + 0.3 * action[:3] + 0.1
        return DriftState(obs=obs, t=state.t + 1), obs, -jnp.sum(action**2), jnp.bool_(False)


WARMUP = 110  # ends inside the fifth episode


def test_warmup_actions_are_uniform_over_the_box_and_counted_as_frames():
    seed = fresh_seed()
    config = load_config("hopper", {"mode": "td3", "learner.warmup_frames": WARMUP, "learner.gaussian_noise_std": 0.0,
                                    "network.actor_hidden": "8,8", "network.critic_hidden": "8,8",
                                    "learner.batch_size": 16, "learner.learning_starts": 16,
                                    "learner.replay_capacity": 1000})
    trainer = Trainer(config, DriftEnv())
    generation = jax.jit(trainer.generation)
    state = trainer.init(jax.random.key(seed))
    warm, after = [], 0
    for _ in range(6):
        actor, before = state.learner.actor, int(state.frames)
        state, metrics = generation(state)
        assert int(metrics.generation_frames) == 25 and int(state.frames) == before + 25 == int(state.replay.size)
        stored = jax.tree.map(lambda x: np.asarray(x[before:before + 25]), state.replay.data)
        acted = np.asarray(trainer.learner.act(actor, jnp.asarray(stored.state)))
        for i in range(25):
            if before + i < WARMUP:
                warm.append(stored.action[i])
                assert np.abs(stored.action[i] - acted[i]).max() > 1e-6, f"seed {seed} frame {before + i}"
            else:  # the actor's own action (no exploration noise in this test)
                np.testing.assert_allclose(stored.action[i], acted[i], atol=1e-6, err_msg=f"seed {seed}")
                after += 1
    assert len(warm) == WARMUP and after == 150 - WARMUP
    warm = np.concatenate(warm)
    assert warm.min() >= -1.0 and warm.max() <= 1.0
    # uniform over [-1, 1]: Kolmogorov-Smirnov at the 1e-4 level (440 draws)
    assert stats.kstest(warm, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-4, f"seed {seed}"
    # the learner trained from the first episode on (25 stored > learning_starts 16), warm-up frames included,
    # one update per stored frame
    assert int(state.learner.num_updates) == 150


# ----------------------------------------------------------------------------- the population's architecture
SMALL_POPULATION = {"evolution.pop_size": 4, "evolution.elite_fraction": 0.25, "evolution.num_evals": 1,
                    "evolution.sync_period": 2, "evolution.genetic_memory_capacity": 64,
                    "evolution.distill_batch_size": 8, "evolution.distill_epochs": 1,
                    "evolution.proximal_batch_size": 16, "learner.replay_capacity": 4096, "learner.batch_size": 16,
                    "learner.learning_starts": 32, "learner.warmup_frames": 30, "network.actor_hidden": "12,6",
                    "network.critic_hidden": "8,8"}


@pytest.mark.parametrize("mode", ["pderl", "erl"])
def test_the_population_evolves_the_learners_architecture(mode):
    seed = fresh_seed()
    config = load_config("hopper", {"mode": mode, "preset": "td3-2018", **SMALL_POPULATION})
    trainer = Trainer(config, DriftEnv())
    state = trainer.init(jax.random.key(seed))
    members = state.evolution.population.members
    assert set(members) == {"w_l1", "w_l2", "w_out"}  # no LayerNorm
    assert [members[n]["kernel"].shape for n in ("w_l1", "w_l2", "w_out")] == [(4, 3, 12), (4, 12, 6), (4, 6, 4)]
    assert jax.tree.map(jnp.shape, state.learner.actor) == jax.tree.map(lambda x: x.shape[1:], members)
    generation = jax.jit(trainer.generation)
    for gen in (1, 2, 3):
        before = state
        state, metrics = generation(state)
        assert np.all(np.isfinite(np.asarray(metrics.fitness))), f"seed {seed}"
        assert jax.tree.map(jnp.shape, state.evolution.population.members) == jax.tree.map(jnp.shape, members)
        if gen == 2:  # the TD3 actor copied into the population
            slot = int(state.evolution.rl_slot)
            for a, b in zip(jax.tree.leaves(state.evolution.population.take(slot).members),
                            jax.tree.leaves(state.learner.actor)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the members were changed by the operators (mutation or crossover of ReLU actors)
    changed = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(before.evolution.population.members), jax.tree.leaves(state.evolution.population.members))]
    assert any(changed), f"seed {seed}"
    assert int(state.learner.num_updates) > 0 and np.isfinite(float(metrics.critic_loss)), f"seed {seed}"


# ----------------------------------------------------------------------------- the commands on another architecture
TINY_RUN = ["--env", "Hopper-v5", "--backend", "native", "--episode-length", "20", "--no-progress", "--mode", "pderl",
            "--preset", "td3-2018", "--seed", "4", "--frames", "100000", "--set", "evolution.pop_size=4",
            "evolution.genetic_memory_capacity=256", "learner.replay_capacity=10000", "learner.warmup_frames=50",
            "network.actor_hidden=16,16", "network.critic_hidden=16,16"]


def test_a_relu_population_checkpoints_resumes_exactly_and_is_evaluated(tmp_path, capsys):
    from pderl_jax.cli import main

    def rows(folder):
        lines = (folder / "metrics.csv").read_text().splitlines()
        return [",".join(v for i, v in enumerate(line.split(",")) if i != 2) for line in lines]  # without wall_s

    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", *TINY_RUN, "--generations", "3", "--out", str(whole)]) == 0
    assert main(["train", *TINY_RUN, "--generations", "2", "--checkpoint-every", "1", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--generations", "3", "--no-progress"]) == 0
    assert rows(split) == rows(whole) and len(rows(whole)) == 4  # header + 3 generations
    # settings that change the state's layout are refused before any checkpoint is touched
    kept = sorted(p.name for p in (split / "checkpoints").iterdir())
    capsys.readouterr()
    assert main(["train", "--resume", str(split), "--generations", "4", "--no-progress", "--set",
                 "network.actor_hidden=8,8"]) == 2
    assert "network.actor_hidden = [8, 8] (recorded [16, 16])" in capsys.readouterr().err
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == kept
    assert not (split / "checkpoints_damaged").exists()
    assert json.loads((split / "config.json").read_text())["network"]["actor_hidden"] == [16, 16]
    config = json.loads((split / "config.json").read_text())
    assert config["preset"] == "td3-2018" and config["network"]["actor_hidden"] == [16, 16]
    assert main(["evaluate", str(split), "--episodes", "2", "--json", str(tmp_path / "e.json")]) == 0
    actors = json.loads((tmp_path / "e.json").read_text())["actors"]
    assert set(actors) == {"champion", "RL actor"} and all(np.isfinite(a["mean"]) for a in actors.values())
    # an official PyTorch actor cannot be loaded into a ReLU actor: refused, naming the option
    capsys.readouterr()
    assert main(["evaluate", "--official", str(DATA / "torch_actor_zip.pt"), "--env", "HalfCheetah-v5",
                 "--preset", "td3-2018", "--set", "network.actor_hidden=16,12"]) == 2
    assert "network.actor_activation = 'relu'" in capsys.readouterr().err


def test_a_comparison_puts_every_method_on_the_preset_it_is_given():
    from pderl_jax.experiments.compare import method_config

    assert method_config("hopper", "pderl", 1000, {}).preset == "official"
    assert method_config("hopper", "td3", 1000, {}).preset == "td3-2018"  # TD3 as its authors ran it
    on_td3 = {method: method_config("hopper", method, 1000, {"preset": "td3-2018", "evolution.pop_size": 6})
              for method in ("pderl", "erl", "td3")}
    for method, config in on_td3.items():
        assert config.mode == method and config.preset == "td3-2018" and config.learner.algorithm == "td3"
        assert config.network.critic_layout == "concat" and config.frames == 1000
    assert on_td3["pderl"].evolution.pop_size == 6
    with pytest.raises(ConfigError, match="pick a ddpg preset"):
        method_config("hopper", "ddpg", 1000, {"preset": "td3-2018"})


def test_a_comparison_recorded_before_presets_resumes_on_the_official_preset(tmp_path):
    from pderl_jax.experiments.compare import format_table, method_config, read_comparison

    old = {"task": "hopper", "methods": ["pderl", "td3"], "seeds": [0], "frames": 1000, "overrides": {},
           "environment": {"name": "hopper", "backend": "gymnasium", "episode_length": 1000}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert read_comparison(tmp_path)["presets"] == {"pderl": "official", "td3": "official"}  # as they ran
    # where a method's runs recorded their preset, that one
    (tmp_path / "td3" / "run_000").mkdir(parents=True)
    (tmp_path / "td3" / "run_000" / "config.json").write_text(json.dumps({"mode": "td3", "preset": "td3-2018"}))
    assert read_comparison(tmp_path)["presets"] == {"pderl": "official", "td3": "td3-2018"}
    new = {**old, "presets": {"pderl": "ourddpg-2018", "td3": "official"}}
    (tmp_path / "config.json").write_text(json.dumps(new))
    presets = read_comparison(tmp_path)["presets"]
    assert [method_config("hopper", m, 1000, {}, presets[m]).preset for m in ("pderl", "td3")] == ["ourddpg-2018",
                                                                                                   "official"]
    stats = {"mean": 1.0, "std": 0.0, "median": 1.0, "wall_s": 1.0}
    table = format_table({"methods": {"pderl": {**stats, "preset": "td3-2018"}, "td3": {**stats, "preset": "td3-2018"},
                                      "erl": stats}})
    assert table.splitlines()[0] == "| metric | PDERL @ td3-2018 | TD3 | ERL |"
