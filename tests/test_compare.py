"""`pderl-jax compare`: the table's statistics, a tiny two-method comparison, merging, PPO and errors."""

import csv
import json
import shutil

import numpy as np
import pytest
from toy_envs import CounterEnv

from pderl_jax.experiments.ppo import BRAX_NOTEBOOK_SETTINGS, MIN_ITERATIONS, scaled_settings
from pderl_jax.cli import main
from pderl_jax.experiments.compare import compare, final_statistics, merge, parse_methods
from pderl_jax.config import ConfigError

SMALL = {"evolution.pop_size": 4, "evolution.elite_fraction": 0.25, "evolution.num_evals": 2,
         "evolution.sync_period": 2, "evolution.genetic_memory_capacity": 64, "evolution.distill_batch_size": 8,
         "evolution.distill_epochs": 1, "evolution.proximal_batch_size": 16, "learner.replay_capacity": 4096,
         "learner.batch_size": 16, "learner.learning_starts": 32, "network.actor_hidden": "16,16",
         "network.critic_input_width": 8, "network.critic_hidden_width": 8}
QUIET = dict(print_fn=lambda _: None, progress=False)


def test_statistics_match_numpy_on_fresh_values():
    rng = np.random.default_rng()
    for n in (1, 2, 5, 6):
        values = rng.normal(1000, 300, n)
        stats = final_statistics(list(values))
        assert stats["n"] == n
        assert stats["mean"] == pytest.approx(sum(values) / n, rel=1e-12)
        assert stats["std"] == pytest.approx(np.sqrt(sum((v - sum(values) / n) ** 2 for v in values) / n), rel=1e-9)
        ordered = sorted(values)
        median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        assert stats["median"] == pytest.approx(median, rel=1e-12)
    assert final_statistics([3.0, 1.0, 2.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2 / 3)), "median": 2.0,
                                                 "n": 3}


def test_paper_numbers_stand_beside_ours():
    from pderl_jax.experiments.paper import paper_result, side_by_side

    assert paper_result("hopper", "perl") == {"mean": 3497, "std": 63, "median": 3501}
    assert paper_result("ant", "ddpg") is None
    summary = {"task": "halfcheetah", "methods": {
        "pderl": {"mean": 1352.2, "std": 10.0, "median": 1300.0}, "ddpg": {"mean": 5.0, "std": 1.0, "median": 5.0}}}
    lines = side_by_side(summary).splitlines()
    assert lines[2] == "| PDERL | 1352 | 10 | 1300 | 13522 | 287 | 13553 | 10.0% |"
    assert lines[3] == "| DDPG | 5 | 1 | 5 | - | - | - | - |"


def test_method_parsing():
    assert parse_methods("pderl, TD3,ppo") == ["pderl", "td3", "ppo"]
    with pytest.raises(ConfigError, match="unknown sac"):
        parse_methods("pderl,sac")
    with pytest.raises(ConfigError, match="twice"):
        parse_methods("erl,erl")


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    summary = compare("hopper", CounterEnv(), ["pderl", "td3"], [3, 8], 150, out / "both", overrides=SMALL, **QUIET)
    return out, summary


def test_a_tiny_comparison_writes_runs_table_and_figure(tiny_comparison):
    out, summary = tiny_comparison
    folder = out / "both"
    for method in ("pderl", "td3"):
        finals = []
        for run in ("run_000", "run_001"):
            rows = read_rows(folder / method / run / "metrics.csv")
            assert int(rows[-1]["frames"]) > 150 and (len(rows) == 1 or int(rows[-2]["frames"]) <= 150)
            finals.append(float(rows[-1]["champion_test"]))
            config = json.loads((folder / method / run / "config.json").read_text())
            assert config["mode"] == method and config["evolution"]["pop_size"] == 4
        result = summary["methods"][method]
        assert result["finals"] == finals and result["mean"] == pytest.approx(np.mean(finals))
        assert result["std"] == pytest.approx(np.std(finals)) and result["median"] == pytest.approx(np.median(finals))
    assert [json.loads((folder / "pderl" / r / "config.json").read_text())["seed"] for r in ("run_000", "run_001")] \
        == [3, 8]
    table = (folder / "table.md").read_text()
    assert "| metric | PDERL | TD3 |" in table and "| mean |" in table and "| median |" in table
    assert "CPU" in table  # the machine the wall-clock was measured on
    assert "Next to the paper's Table 1" in table and "| PDERL |" in table and "| 3397 |" in table
    rows = read_rows(folder / "table.csv")
    assert [r["method"] for r in rows] == ["pderl", "td3"]
    assert float(rows[0]["mean"]) == pytest.approx(summary["methods"]["pderl"]["mean"])
    assert (folder / "figure4.png").stat().st_size > 5000


def test_comparisons_of_different_methods_merge_into_one_table(tiny_comparison, tmp_path):
    out, _ = tiny_comparison
    other = compare("hopper", CounterEnv(), ["ddpg"], [3, 8], 150, tmp_path / "ddpg", overrides=SMALL, **QUIET)
    merged = merge([out / "both", tmp_path / "ddpg"], tmp_path / "merged", print_fn=lambda _: None)
    assert list(merged["methods"]) == ["pderl", "ddpg", "td3"]  # the paper's order
    assert merged["methods"]["ddpg"]["finals"] == other["methods"]["ddpg"]["finals"]
    assert (tmp_path / "merged" / "ddpg" / "run_001" / "metrics.csv").exists()
    assert "| metric | PDERL | DDPG | TD3 |" in (tmp_path / "merged" / "table.md").read_text()
    with pytest.raises(ConfigError, match="appears in several"):
        merge([out / "both", out / "both"], tmp_path / "twice", print_fn=lambda _: None)
    shutil.copytree(tmp_path / "ddpg", tmp_path / "one_seed")
    summary = json.loads((tmp_path / "one_seed" / "summary.json").read_text())
    (tmp_path / "one_seed" / "summary.json").write_text(json.dumps({**summary, "seeds": [3]}))
    with pytest.raises(ConfigError, match="differs in seeds"):
        merge([out / "both", tmp_path / "one_seed"], tmp_path / "bad", print_fn=lambda _: None)


def test_an_existing_comparison_is_kept_unless_forced(tiny_comparison):
    out, _ = tiny_comparison
    with pytest.raises(ConfigError, match="--force"):
        compare("hopper", CounterEnv(), ["td3"], [3], 150, out / "both", overrides=SMALL, **QUIET)


def test_ppo_batch_is_scaled_to_the_budget_keeping_its_learning_settings():
    for task in BRAX_NOTEBOOK_SETTINGS:
        for frames in (1_000, 50_000, 1_000_000, 100_000_000):
            settings, original = scaled_settings(task, frames), BRAX_NOTEBOOK_SETTINGS[task]
            per_iteration = settings["batch_size"] * settings["num_minibatches"] * settings["unroll_length"]
            assert settings["batch_size"] == 1 or per_iteration * MIN_ITERATIONS <= frames
            assert settings["batch_size"] * 2 > original["batch_size"] or per_iteration * 2 * MIN_ITERATIONS > frames
            assert settings["batch_size"] * settings["num_minibatches"] % settings["num_envs"] == 0
            for key in ("learning_rate", "entropy_cost", "discounting", "unroll_length", "reward_scaling"):
                assert settings[key] == original[key]
    assert scaled_settings("halfcheetah", 10**9)["batch_size"] == 512  # enough budget: the notebook's values


@pytest.mark.slow  # ~90 s: brax.training's PPO compiles for long; PPO through the MJX adapter is slow too
def test_ppo_runs_on_brax_and_is_counted_like_our_runs(tmp_path):
    assert main(["compare", "--env", "hopper", "--physics", "spring", "--episode-length", "20", "--methods", "ppo",
                 "--seeds", "1", "--frames", "1200", "--out", str(tmp_path / "ppo"), "--no-progress"]) == 0
    rows = read_rows(tmp_path / "ppo" / "ppo" / "run_000" / "metrics.csv")
    config = json.loads((tmp_path / "ppo" / "ppo" / "run_000" / "config.json").read_text())
    settings = config["ppo"]
    assert config["preset"] == "cleanrl" and settings["num_envs"] == 1  # the comparison's default PPO
    assert config["reward_normalisation"] and config["observation_clip"] == 10 and "cleanrl" in config["settings_source"]
    per_iteration = settings["batch_size"] * settings["num_minibatches"] * settings["unroll_length"]
    frames = [int(r["frames"]) for r in rows]
    assert frames[0] == 0 and frames == sorted(frames) and frames[-1] >= 1200
    assert all(f % per_iteration == 0 for f in frames)  # environment steps, as brax counts them
    assert all(np.isfinite(float(r["champion_test"])) and float(r["champion_test"]) <= 20 * 10 for r in rows)
    assert np.isnan(float(rows[-1]["pop_mean"]))
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    assert summary["methods"]["ppo"]["finals"] == [float(rows[-1]["champion_test"])]
    assert np.isnan(float(rows[0]["training_return"]))  # no training episode has finished before training
    trained = float(rows[-1]["training_return"])  # episodes of 20 steps have finished since: the sources' measure
    assert np.isfinite(trained) and abs(trained) <= 20 * 10
    assert summary["methods"]["ppo"]["training"]["finals"] == [trained]
    assert "training episodes, mean (last 100)" in (tmp_path / "ppo" / "table.md").read_text()
    assert summary["methods"]["ppo"]["preset"] == "cleanrl"
    assert json.loads((tmp_path / "ppo" / "config.json").read_text())["presets"] == {"ppo": "cleanrl"}
    run_summary = json.loads((tmp_path / "ppo" / "ppo" / "run_000" / "summary.json").read_text())
    assert run_summary["final_champion_test"] == float(rows[-1]["champion_test"]) and run_summary["frames"] >= 1200
    written = (tmp_path / "ppo" / "ppo" / "run_000" / "metrics.csv").read_text()
    assert main(["compare", "--resume", str(tmp_path / "ppo"), "--no-progress"]) == 0  # the finished seed is kept
    assert (tmp_path / "ppo" / "ppo" / "run_000" / "metrics.csv").read_text() == written


@pytest.mark.parametrize("argv, message", [
    (["compare", "--env", "hopper", "--backend", "brax", "--methods", "ppo", "--ppo-preset", "sb3"],
     "unknown PPO preset 'sb3'; choose one of cleanrl, cleanrl-brax-loss, brax-notebook"),
    (["compare", "--methods", "pderl,dqn"], "unknown dqn"),
    (["compare", "--seeds", "0"], "--seeds"),
    (["compare", "--env", "HalfCheetah-v5", "--backend", "native", "--methods", "ppo"], "needs JAX physics"),
    (["compare", "--frames", "0"], "--frames must be positive"),
    (["compare", "--set", "evolution.pop_size=1"], "evolution.pop_size"),
    (["compare", "--merge", "nowhere"], "summary.json not found"),
])
def test_bad_comparisons_are_rejected_before_running(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_stopped_comparison_resumes_where_it_stopped(tiny_comparison, tmp_path, monkeypatch, capsys):
    """Ctrl-C after PDERL's first generation: PDERL continues from its checkpoint, TD3 then runs, and every
    CSV and final equals the comparison that never stopped."""
    from pderl_jax.training.driver import StopAfterChunk

    out, whole = tiny_comparison
    asked = []
    monkeypatch.setattr(StopAfterChunk, "agreed", lambda self: asked.append(1) or len(asked) > 1)
    stopped = compare("hopper", CounterEnv(), ["pderl", "td3"], [3, 8], 150, tmp_path / "both", overrides=SMALL,
                      **QUIET)
    monkeypatch.undo()
    assert stopped == {"interrupted": True} and not (tmp_path / "both" / "td3").exists()
    assert len(read_rows(tmp_path / "both" / "pderl" / "run_000" / "metrics.csv")) == 1
    assert main(["compare", "--resume", str(tmp_path / "both"), "--seeds", "2"]) == 2
    assert "drop --seeds" in capsys.readouterr().err
    assert main(["compare", "--resume", str(tmp_path)]) == 2
    assert "cannot read the comparison's settings" in capsys.readouterr().err
    resumed = json.loads((tmp_path / "both" / "config.json").read_text())
    assert resumed["methods"] == ["pderl", "td3"] and resumed["seeds"] == [3, 8]
    summary = compare("hopper", CounterEnv(), ["pderl", "td3"], [3, 8], 150, tmp_path / "both", overrides=SMALL,
                      resume=True, **QUIET)
    for method in ("pderl", "td3"):
        assert summary["methods"][method]["finals"] == whole["methods"][method]["finals"], method
        for run in ("run_000", "run_001"):
            ours = read_rows(tmp_path / "both" / method / run / "metrics.csv")
            theirs = read_rows(out / "both" / method / run / "metrics.csv")
            assert [{**r, "wall_s": 0} for r in ours] == [{**r, "wall_s": 0} for r in theirs], (method, run)
    written = (tmp_path / "both" / "td3" / "run_000" / "metrics.csv").stat().st_mtime_ns
    again = compare("hopper", CounterEnv(), ["pderl", "td3"], [3, 8], 150, tmp_path / "both", overrides=SMALL,
                    resume=True, **QUIET)  # nothing left to run: the finished methods are kept as they are
    assert again["methods"]["td3"]["finals"] == summary["methods"]["td3"]["finals"]
    assert (tmp_path / "both" / "td3" / "run_000" / "metrics.csv").stat().st_mtime_ns == written
