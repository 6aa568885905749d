"""`pderl-jax train` end to end on a short brax run: CSV, resolved config, summary, budget."""

import csv
import json
import math

from pderl_jax.cli import main
from pderl_jax.training.loop import CSV_COLUMNS

TINY = ["evolution.pop_size=4", "evolution.genetic_memory_capacity=256", "learner.replay_capacity=10000",
        "network.actor_hidden=32,32", "network.critic_input_width=16", "network.critic_hidden_width=16"]


def test_train_writes_metrics_config_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--env", "hopper", "--physics", "positional", "--frames", "600", "--episode-length", "20",
                 "--seed", "3", "--out", str(out), "--no-progress", "--set", *TINY])
    assert code == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    frames = [int(r["frames"]) for r in rows]
    # (4 members x 3 trials + 1 RL episode) x at most 20 steps per generation
    steps = [b - a for a, b in zip([0] + frames, frames)]
    assert all(13 <= s <= 13 * 20 for s in steps), steps
    # the budget is checked between generations, as in the official loop: stop once it is exceeded
    assert frames[-1] > 600 and (len(frames) == 1 or frames[-2] <= 600)
    assert [int(r["generation"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert float(r["pop_min"]) <= float(r["pop_mean"]) <= float(r["pop_max"]) == float(r["best_fitness"])
        assert int(r["synced"]) == 1  # hopper: omega = 1
    assert math.isfinite(float(rows[-1]["critic_loss"]))  # more than 640 frames stored by then
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "hopper" and config["evolution"]["pop_size"] == 4 and config["seed"] == 3
    assert config["environment"] == {"name": "hopper", "backend": "positional", "episode_length": 20}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == frames[-1] and summary["generations"] == len(rows)
    printed = capsys.readouterr().out
    assert "memory estimate" in printed and "done:" in printed and str(out) in printed


def test_train_rejects_bad_settings_before_compiling(tmp_path, capsys):
    assert main(["train", "--env", "hopper", "--out", str(tmp_path), "--set", "evolution.elite_fraction=2"]) == 2
    assert "evolution.elite_fraction" in capsys.readouterr().err
    assert main(["train", "--env", "hopper", "--episode-length", "0", "--out", str(tmp_path)]) == 2
    assert "episode length must be positive" in capsys.readouterr().err
    assert not (tmp_path / "metrics.csv").exists()


def test_same_seed_gives_the_same_csv(tmp_path):
    tables = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["train", "--env", "hopper", "--physics", "positional", "--frames", "300", "--episode-length",
                     "20", "--seed", "5", "--out", str(out), "--no-progress", "--set", *TINY]) == 0
        with open(out / "metrics.csv") as f:
            tables.append([{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)])
    assert tables[0] == tables[1] and len(tables[0]) >= 1


def test_learner_only_mode_writes_rows_without_population_columns(tmp_path):
    out = tmp_path / "td3"
    assert main(["train", "--env", "hopper", "--mode", "td3", "--physics", "positional", "--frames", "100",
                 "--episode-length", "20", "--seed", "1", "--out", str(out), "--no-progress", "--set", *TINY]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(math.isnan(float(r["pop_mean"])) and math.isnan(float(r["elite_rate"])) for r in rows)
    assert all(r["champion_test"] == r["rl_test"] for r in rows)
    steps = [b - a for a, b in zip([0] + [int(r["frames"]) for r in rows], [int(r["frames"]) for r in rows])]
    assert all(1 <= s <= 20 for s in steps), steps  # one exploration episode per row
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "td3" and config["learner"]["algorithm"] == "td3"


def test_mode_and_learner_must_agree(tmp_path, capsys):
    assert main(["train", "--env", "hopper", "--mode", "ddpg", "--learner", "td3", "--out", str(tmp_path)]) == 2
    assert "set learner.algorithm=ddpg" in capsys.readouterr().err


def test_train_on_native_mujoco(tmp_path):
    out = tmp_path / "gym"
    assert main(["train", "--env", "Hopper-v5", "--frames", "300", "--episode-length", "20", "--seed", "2",
                 "--out", str(out), "--no-progress", "--set", *TINY]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["frames"]) > 300
    assert all(math.isfinite(float(r["champion_test"])) for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["environment"]["backend"] == "gymnasium" and config["task"] == "hopper"
