"""Every command on an MJX task (Swimmer-v5, the quickest to compile): train, exact resume, evaluate,
render from the MJX state; in `slow`: analyze and plot, a sweep sharded over two devices, PPO through the adapter.

One short run (`mjx_run`) serves the commands that read a run; the sweep reproduces it as one of
its runs, so the vmapped and sharded program is checked against the single one.
"""

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import TINY

from pderl_jax.cli import main
from pderl_jax.training.run_folder import open_run

SWIMMER = ["--env", "Swimmer-v5", "--backend", "mjx", "--episode-length", "20", "--no-progress"]
SETTINGS = [*TINY, "learner.learning_starts=64", "learner.batch_size=16"]
RUN_ARGS = [*SWIMMER, "--frames", "300", "--seed", "1", "--checkpoint-every", "1", "--set", *SETTINGS]
VALUES = ["generation", "frames", "best_fitness", "pop_mean", "champion_test", "rl_test", "critic_loss",
          "actor_loss", "synced"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def mjx_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mjx_run") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", *RUN_ARGS, "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_a_run_on_mjx_trains_and_resumes_exactly(mjx_run, tmp_path):
    out, printed = mjx_run
    assert "Swimmer-v5 on MuJoCo MJX" in printed and "backend mjx: as asked" in printed
    written = rows(out / "metrics.csv")
    assert len(written) == 4 and np.isfinite(float(written[-1]["critic_loss"]))  # the learner trained
    record = json.loads((out / "config.json").read_text())["environment"]
    assert record == {"name": "swimmer", "backend": "mjx", "episode_length": 20}
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    for generation in (3, 4):  # as if stopped after generation 2's checkpoint
        shutil.rmtree(resumed / "checkpoints" / str(generation))
    assert main(["train", "--resume", str(resumed), "--no-progress"]) == 0
    again = rows(resumed / "metrics.csv")
    assert [[r[c] for c in VALUES] for r in again] == [[r[c] for c in VALUES] for r in written]


def test_evaluate_and_render_an_mjx_run(mjx_run, tmp_path, capsys):
    out, _ = mjx_run
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(out), "--episodes", "3", "--seed", "5", "--json", str(report)]) == 0
    returns = json.loads(report.read_text())["actors"]["champion"]["returns"]
    assert len(returns) == 3 and np.all(np.isfinite(returns)) and len(set(returns)) == 3
    gl = pytest.importorskip("pderl_jax.envs.render")
    try:
        gl.headless_gl()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"no headless OpenGL: {error}")
    from pderl_jax.envs.render import render_episode

    run = open_run(out)
    info = render_episode(run.env, run.trainer.apply_actor, run.state.evolution.champion, tmp_path / "swim.gif",
                          seed=7, max_steps=12)
    frames = iio.imread(tmp_path / "swim.gif")
    assert info["frames"] == frames.shape[0] == 12
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() > 0  # the swimmer moved
    assert np.isfinite(info["return"]) and info["format"] == "gif"
    assert main(["render", str(out), "--out", str(tmp_path / "episode.html")]) == 2
    assert "use a path ending in .gif, .mp4" in capsys.readouterr().err


@pytest.mark.slow  # ~40 s: the study compiles rollouts of its own; analyze is tested on brax and native tasks
def test_analyze_and_plot_an_mjx_run(mjx_run, tmp_path, capsys):
    out, _ = mjx_run
    assert main(["analyze", str(out), "--draws", "1", "--episodes", "1", "--sigmas", "0.1",
                 "--out", str(tmp_path / "analysis")]) == 0
    assert "distillation crossover" in capsys.readouterr().out
    summary = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert np.isfinite(summary["crossover"]["distilled_fitness"]).all()
    assert main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "learning_curves.png").stat().st_size > 1000


@pytest.mark.slow  # ~60 s; a sweep sharded over two devices against one device runs on the toy task in test_sweep.py
def test_a_sweep_on_mjx_sharded_over_two_devices_reproduces_the_single_run(mjx_run, tmp_path):
    """Seeds 1 and 2 on two forced host devices; seed 1's run is the single run of `mjx_run`."""
    out, _ = mjx_run
    argv = ["sweep", *SWIMMER, "--seeds", "1,2", "--frames", "300", "--out", str(tmp_path / "sweep"),
            "--set", *SETTINGS]
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    done = subprocess.run([sys.executable, "-m", "pderl_jax.cli", *argv], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sharded over 2 cpu devices" in done.stdout, done.stdout[-2000:]
    swept, single = rows(tmp_path / "sweep" / "run_000" / "metrics.csv"), rows(out / "metrics.csv")
    assert len(swept) == len(single)
    for a, b in zip(swept, single):  # a tolerance: the sharded, vmapped program is another program
        assert (a["generation"], a["frames"], a["synced"]) == (b["generation"], b["frames"], b["synced"])
        np.testing.assert_allclose([float(a[c]) for c in VALUES[2:-1]], [float(b[c]) for c in VALUES[2:-1]],
                                   rtol=1e-3, atol=1e-4)
    assert rows(tmp_path / "sweep" / "run_001" / "metrics.csv")[-1]["champion_test"] != single[-1]["champion_test"]


@pytest.mark.slow  # ~95 s: brax.training's PPO compiles for long; PPO on brax (test_compare.py) is slow too
def test_ppo_from_brax_training_runs_on_an_mjx_task_and_is_counted_like_our_runs(tmp_path):
    assert main(["compare", *SWIMMER, "--methods", "ppo", "--seeds", "1", "--frames", "1200",
                 "--out", str(tmp_path / "ppo")]) == 0
    run = tmp_path / "ppo" / "ppo" / "run_000"
    written = rows(run / "metrics.csv")
    config = json.loads((run / "config.json").read_text())
    assert config["environment"]["backend"] == "mjx"
    settings = config["ppo"]
    per_iteration = settings["batch_size"] * settings["num_minibatches"] * settings["unroll_length"]
    frames = [int(r["frames"]) for r in written]
    assert frames[0] == 0 and frames == sorted(frames) and frames[-1] >= 1200
    assert all(f % per_iteration == 0 for f in frames)  # environment steps, as brax counts them
    # Swimmer-v5's reward per step is a forward velocity minus 1e-4 |a|^2: 20 steps stay far inside 20 x 1
    assert all(np.isfinite(float(r["champion_test"])) and abs(float(r["champion_test"])) < 20 for r in written)
    assert np.isnan(float(written[-1]["pop_mean"]))
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    assert summary["methods"]["ppo"]["finals"] == [float(written[-1]["champion_test"])]
