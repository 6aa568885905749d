"""`pderl-jax train` end to end on short brax and native MuJoCo runs: CSV, resolved config, summary, budget."""

import csv
import json
import math

from conftest import BRAX_RUN_ARGS, TINY

from pderl_jax.cli import main
from pderl_jax.training.metrics import CSV_COLUMNS


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def without_wall_time(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_train_writes_metrics_config_and_summary(brax_run):
    out = brax_run.out
    rows = read_rows(out / "metrics.csv")
    assert list(rows[0]) == CSV_COLUMNS
    frames = [int(r["frames"]) for r in rows]
    # (4 members x 3 trials + 1 RL episode) x at most 20 steps per generation
    steps = [b - a for a, b in zip([0] + frames, frames)]
    assert all(13 <= s <= 13 * 20 for s in steps), steps
    # the budget is checked between generations, as in the official loop: stop once it is exceeded
    assert frames[-1] > 600 and (len(frames) == 1 or frames[-2] <= 600)
    assert [int(r["generation"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        # pop_max and best_fitness are both the maximum of the same fitness array
        assert float(r["pop_min"]) <= float(r["pop_mean"]) <= float(r["pop_max"]) == float(r["best_fitness"])
        assert int(r["synced"]) == 1  # hopper: omega = 1
    assert math.isfinite(float(rows[-1]["critic_loss"]))  # more than 640 frames stored by then
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "hopper" and config["evolution"]["pop_size"] == 4 and config["seed"] == 3
    assert config["environment"] == {"name": "hopper", "backend": "brax", "physics": "spring", "episode_length": 20}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == frames[-1] and summary["generations"] == len(rows)
    assert "memory estimate" in brax_run.printed and "done:" in brax_run.printed and str(out) in brax_run.printed


def test_train_rejects_bad_settings_before_compiling(tmp_path, capsys):
    assert main(["train", "--env", "hopper", "--out", str(tmp_path), "--set", "evolution.elite_fraction=2"]) == 2
    assert "evolution.elite_fraction" in capsys.readouterr().err
    assert main(["train", "--env", "hopper", "--episode-length", "0", "--out", str(tmp_path)]) == 2
    assert "episode length must be positive" in capsys.readouterr().err
    assert not (tmp_path / "metrics.csv").exists()


def test_same_seed_gives_the_same_csv(brax_run, tmp_path):
    again = tmp_path / "again"
    assert main(["train", *BRAX_RUN_ARGS, "--out", str(again)]) == 0
    # Exact: the same generation program (same settings and shapes, so the same compiled executable)
    # from the same seed on the same machine.
    first = without_wall_time(read_rows(brax_run.out / "metrics.csv"))
    assert first == without_wall_time(read_rows(again / "metrics.csv")) and len(first) >= 1


def test_learner_only_mode_writes_rows_without_population_columns(tmp_path):
    out = tmp_path / "td3"
    assert main(["train", "--env", "Hopper-v5", "--backend", "native", "--episode-length", "20", "--no-progress",
                 "--mode", "td3", "--frames", "100", "--seed", "1", "--out", str(out), "--set", *TINY]) == 0
    rows = read_rows(out / "metrics.csv")
    assert rows and all(math.isnan(float(r["pop_mean"])) and math.isnan(float(r["elite_rate"])) for r in rows)
    assert all(r["champion_test"] == r["rl_test"] for r in rows)  # one value written twice
    steps = [b - a for a, b in zip([0] + [int(r["frames"]) for r in rows], [int(r["frames"]) for r in rows])]
    assert all(1 <= s <= 20 for s in steps), steps  # one exploration episode per row
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "td3" and config["learner"]["algorithm"] == "td3"
    # --mode td3 is the TD3 authors' TD3: its preset recorded with its values (warm-up: all 100 frames random)
    assert config["preset"] == "td3-2018" and config["learner"]["warmup_frames"] == 1000
    assert config["network"]["critic_layout"] == "concat" and config["network"]["actor_activation"] == "relu"


def test_mode_and_learner_must_agree(tmp_path, capsys):
    assert main(["train", "--env", "hopper", "--mode", "ddpg", "--learner", "td3", "--out", str(tmp_path)]) == 2
    assert "set learner.algorithm=ddpg" in capsys.readouterr().err


def test_native_mujoco_run_then_analyze(tmp_path, capsys):
    """Native MuJoCo training, then `analyze` on the result. (The study during a run, `--analyze-every`,
    and that it leaves the training untouched are tested on the toy task in test_checkpoint.py.)"""
    studied = tmp_path / "studied"
    assert main(["train", "--env", "Hopper-v5", "--backend", "native", "--frames", "200", "--episode-length", "20",
                 "--seed", "2", "--no-progress", "--out", str(studied), "--set", *TINY]) == 0
    rows = read_rows(studied / "metrics.csv")
    assert rows and int(rows[-1]["frames"]) > 200
    config = json.loads((studied / "config.json").read_text())
    assert config["environment"]["backend"] == "native" and config["task"] == "hopper"
    capsys.readouterr()
    assert main(["analyze", str(studied), "--draws", "2", "--episodes", "1"]) == 0
    assert "distillation crossover" in capsys.readouterr().out
    summary = json.loads((studied / "analysis" / "analysis.json").read_text())
    assert summary["draws"] == 2 and len(summary["crossover"]["distilled_fitness"]) == 2
    assert (studied / "analysis" / "crossover_states.png").stat().st_size > 5000


def test_analyze_rejects_bad_input(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "config.json not found" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--draws", "0"]) == 2
    assert "--draws and --episodes must be at least 1" in capsys.readouterr().err
