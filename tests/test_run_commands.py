"""The commands around a run: train --resume/--force/--tensorboard, evaluate, render, plot, and their errors."""

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from conftest import BRAX_HOPPER, TINY

from pderl_jax.cli import main
from pderl_jax.interop.torch_checkpoint import read_torch_state_dict
from pderl_jax.training.run_folder import open_run

DATA = Path(__file__).parent / "data"


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def read_scalars(folder):
    """(tag, value) of every scalar in the TensorBoard event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            found += [(v.tag, v.simple_value) for v in event.summary.value]
    return found


@pytest.fixture(scope="module")
def saved_run(brax_run):
    return brax_run.out  # shared with test_train_cli.py (conftest.py); tests here only read it


def test_training_leaves_checkpoints_curve_and_tensorboard_events(saved_run):
    generations = len(rows(saved_run / "metrics.csv"))
    assert 2 <= generations < 5
    assert sorted(p.name for p in (saved_run / "checkpoints").iterdir()) == [str(generations)]  # every 5, at the end
    assert (saved_run / "learning_curve.png").stat().st_size > 1000
    logged = [value for tag, value in read_scalars(saved_run / "tensorboard") if tag == "champion_test"]
    np.testing.assert_allclose(logged, [float(r["champion_test"]) for r in rows(saved_run / "metrics.csv")],
                               rtol=1e-6)
    assert json.loads((saved_run / "config.json").read_text())["run"]["checkpoint_every"] == 5


def test_an_existing_run_is_kept_unless_forced_and_resume_rejects_new_settings(saved_run, capsys):
    before = (saved_run / "metrics.csv").read_text()
    assert main(["train", *BRAX_HOPPER, "--seed", "9", "--out", str(saved_run), "--set", *TINY]) == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and "--force" in err and f"--resume {saved_run}" in err
    assert (saved_run / "metrics.csv").read_text() == before
    assert main(["train", "--resume", str(saved_run), "--seed", "4"]) == 2
    assert "drop --seed" in capsys.readouterr().err
    assert main(["train", "--resume", str(saved_run.parent / "nowhere")]) == 2
    assert "config.json not found" in capsys.readouterr().err
    assert main(["train", "--resume", str(saved_run), "--set", "evolution.pop_size=0"]) == 2
    assert "evolution.pop_size" in capsys.readouterr().err
    assert (saved_run / "metrics.csv").read_text() == before


def test_evaluate_reports_champion_and_rl_actor_over_fresh_episodes(saved_run, tmp_path, capsys):
    report = tmp_path / "eval.json"
    episodes = int(np.random.default_rng().integers(2, 5))
    assert main(["evaluate", str(saved_run), "--episodes", str(episodes), "--seed", "3", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "champion" in printed and "RL actor" in printed
    result = json.loads(report.read_text())["actors"]
    run = open_run(saved_run)
    # an independent episode loop with the restored champion, stepped one action at a time
    env = run.env
    keys = jax.random.split(jax.random.split(jax.random.key(3))[0], episodes)  # the rollout's reset keys
    step, apply = jax.jit(env.step), jax.jit(run.trainer.apply_actor)
    expected = []
    for key in keys:
        state, total = env.reset(key), 0.0
        for _ in range(env.episode_length):
            state, _, reward, done = step(state, apply(run.state.evolution.champion, state.obs))
            total += float(reward)
            if bool(done):
                break
        expected.append(total)
    np.testing.assert_allclose(result["champion"]["returns"], expected, rtol=1e-4, atol=1e-4)
    assert result["champion"]["mean"] == pytest.approx(np.mean(expected), rel=1e-4, abs=1e-4)
    assert result["champion"]["std"] == pytest.approx(np.std(expected), rel=1e-3, abs=1e-3)
    assert len(result["RL actor"]["returns"]) == episodes


def test_render_writes_a_brax_page(saved_run, tmp_path, capsys):
    page = tmp_path / "episode.html"
    assert main(["render", str(saved_run), "--actor", "rl", "--out", str(page)]) == 0
    text = page.read_text()
    assert "<html" in text.lower() and "brax" in text.lower() and "RL actor" in capsys.readouterr().out
    assert main(["render", str(saved_run), "--out", str(tmp_path / "episode.txt")]) == 2
    assert ".txt" in capsys.readouterr().err


def test_plot_draws_curves_for_a_run(saved_run, tmp_path):
    assert main(["plot", str(saved_run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert curves  # the numbers behind the figure


def test_official_actor_state_dict_is_evaluated_and_rendered(tmp_path, capsys):
    """A real torch-written actor (obs 17, widths 16 and 12, action 6) on native HalfCheetah-v5."""
    args = ["--official", str(DATA / "torch_actor_zip.pt"), "--env", "HalfCheetah-v5", "--episode-length", "15",
            "--set", "network.actor_hidden=16,12"]
    assert main(["evaluate", *args, "--episodes", "2", "--json", str(tmp_path / "e.json")]) == 0
    returns = json.loads((tmp_path / "e.json").read_text())["actors"]["official actor"]["returns"]
    assert len(returns) == 2 and all(np.isfinite(returns))
    assert main(["render", *args, "--out", str(tmp_path / "cheetah.gif"), "--max-steps", "6"]) == 0
    assert iio.imread(tmp_path / "cheetah.gif").shape[0] == 6
    assert main(["evaluate", *args[:-1], "network.actor_hidden=32,32"]) == 2
    assert "check" in capsys.readouterr().err
    assert read_torch_state_dict(DATA / "torch_actor_legacy.pkl").keys() == read_torch_state_dict(
        DATA / "torch_actor_zip.pt").keys()


@pytest.mark.parametrize("argv, message", [
    (["evaluate"], "give a run folder"),
    (["evaluate", "somewhere", "--official", "x.pt"], "not both"),
    (["evaluate", "nowhere"], "config.json not found"),
    (["evaluate", "--official", "missing.pt"], "missing.pt"),
    (["plot", "nowhere"], "nowhere"),
    (["train", "--env", "hopper", "--checkpoint-every", "-1"], "--checkpoint-every"),
    (["train", "--env", "hopper", "--keep-checkpoints", "0"], "--keep-checkpoints"),
    (["train", "--env", "hopper", "--generations", "-3"], "--generations"),
    (["train", "--env", "hopper", "--set", "learner.critic_lr=nan"], "learner.critic_lr = nan must be a finite"),
    (["train", "--env", "walker"], "unknown task"),
    (["train", "--env", "hopper", "--set", "learner.nope=1"], "learner.nope"),
])
def test_bad_command_lines_are_rejected_with_the_fix(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # rejected before any run folder was made


def test_evaluate_without_checkpoint_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "hopper", "environment": {
        "name": "hopper", "backend": "spring", "episode_length": 20}}))
    assert main(["evaluate", str(run)]) == 2
    assert "no intact checkpoint" in capsys.readouterr().err
    (run / "config.json").write_text("{broken")
    assert main(["evaluate", str(run)]) == 2
    assert "is not a run's config.json" in capsys.readouterr().err
