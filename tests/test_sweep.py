"""Sweeps: seeds x float settings in one vmapped program, equal to the runs done one by one."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from toy_envs import CounterEnv

from pderl_jax.cli import main
from pderl_jax.config import ConfigError, TrainingDiverged, load_config, parse_seeds
from pderl_jax.training.checkpoint import CheckpointOptions, Checkpointer
from pderl_jax.training.generation import Trainer
from pderl_jax.training.driver import RunOptions
from pderl_jax.training.loop import train
from pderl_jax.training.sweep import (expand_runs, parse_grid, read_sweep, sweepable_fields,
                                      train_sweep)

SMALL = {"evolution.pop_size": 4, "evolution.elite_fraction": 0.25, "evolution.num_evals": 2,
         "evolution.sync_period": 2, "evolution.genetic_memory_capacity": 64, "evolution.distill_batch_size": 8,
         "evolution.distill_epochs": 1, "evolution.proximal_batch_size": 16, "learner.replay_capacity": 4096,
         "learner.batch_size": 16, "learner.learning_starts": 32, "network.actor_hidden": "16,16",
         "network.critic_input_width": 8, "network.critic_hidden_width": 8, "frames": 200}
QUIET = RunOptions(progress=False)
NUMERIC = ["best_fitness", "pop_mean", "champion_test", "rl_test", "critic_loss", "actor_loss"]


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_rows(a, b, msg):
    assert len(a) == len(b), msg
    for x, y in zip(a, b):
        assert (x["generation"], x["frames"], x["synced"]) == (y["generation"], y["frames"], y["synced"]), msg
        np.testing.assert_allclose([float(x[c]) for c in NUMERIC], [float(y[c]) for c in NUMERIC],
                                   rtol=1e-3, atol=1e-4, err_msg=msg)


def test_seed_and_grid_parsing():
    # One meaning in every command: a count, a range or a list (one seed alone: "4,").
    assert parse_seeds("0..3") == [0, 1, 2, 3] and parse_seeds("5,2") == [5, 2] and parse_seeds("4,") == [4]
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds(" 1 ") == [0] and parse_seeds("6..6") == [6]
    for bad in ("a..b", "1,1", "", "0", "-2", "5..3", "2.5"):
        with pytest.raises(ConfigError, match=r"--seeds .*a count \(3: seeds 0, 1, 2\), a range .* or a list"):
            parse_seeds(bad)
    assert parse_grid(["learner.actor_lr=1e-4,5e-5"]) == {"learner.actor_lr": [1e-4, 5e-5]}
    with pytest.raises(ConfigError, match="only float settings can vary.*learner.actor_lr"):
        parse_grid(["evolution.pop_size=4,8"])
    with pytest.raises(ConfigError, match="values must be numbers"):
        parse_grid(["learner.tau=fast"])
    with pytest.raises(ConfigError, match="must look like"):
        parse_grid(["learner.tau"])
    assert "evolution.mutation_sigma" in sweepable_fields() and "learner.batch_size" not in sweepable_fields()
    base = load_config("hopper")
    runs = expand_runs(base, [0, 1], {"learner.tau": [0.001, 0.01], "learner.gamma": [0.9, 0.99]})
    assert len(runs) == 8 and {(r.seed, r.config.learner.tau, r.config.learner.gamma) for r in runs} == {
        (s, t, g) for s in (0, 1) for t in (0.001, 0.01) for g in (0.9, 0.99)}
    with pytest.raises(ConfigError, match="learner.tau = 2.0 must lie in"):
        expand_runs(base, [0], {"learner.tau": [2.0]})


SWEEP_SEEDS, SWEEP_GRID = [3, 4], {"learner.actor_lr": [5e-5, 1e-3]}
SINGLE = 1  # seed 4 with the first rate: a mix-up of the seed axis, the grid axis or their order shows


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The sweep and the single run of SINGLE, in this process: one device."""
    out = tmp_path_factory.mktemp("one_device")
    base = load_config("hopper", SMALL)
    runs = expand_runs(base, SWEEP_SEEDS, SWEEP_GRID)
    summaries = train_sweep(base, runs, CounterEnv(), out / "sweep", QUIET, print_fn=lambda _: None)
    train(runs[SINGLE].config, CounterEnv(), out / "single", RunOptions(progress=False), print_fn=lambda _: None)
    return out, base, runs, summaries


def test_a_sweep_equals_its_runs_done_one_by_one(one_device):
    """Seeds 3 and 4 with two actor learning rates: a sweep run's CSV matches the same run alone."""
    out, base, runs, summaries = one_device
    with pytest.raises(ConfigError, match="already holds a sweep.*--force"):
        train_sweep(base, runs, CounterEnv(), out / "sweep", QUIET, print_fn=lambda _: None)
    assert [s["run"] for s in summaries] == [0, 1, 2, 3]
    table = read(out / "sweep" / "runs.csv")
    assert [(int(r["seed"]), float(r["learner.actor_lr"])) for r in table] == [
        (3, 5e-5), (4, 5e-5), (3, 1e-3), (4, 1e-3)]
    swept = out / "sweep" / f"run_{SINGLE:03d}"
    # a tolerance: the vmapped program with traced settings is another program than the single run's
    assert_same_rows(read(swept / "metrics.csv"), read(out / "single" / "metrics.csv"), f"run {SINGLE}")
    for run in runs:
        config = json.loads((out / "sweep" / f"run_{run.index:03d}" / "config.json").read_text())
        assert config["seed"] == run.seed and config["learner"]["actor_lr"] == run.config.learner.actor_lr
    # the learning rate reaches the program: same seed, different rate, different learner
    a, b = read(out / "sweep" / "run_000" / "metrics.csv"), read(out / "sweep" / "run_002" / "metrics.csv")
    assert a[-1]["actor_loss"] != b[-1]["actor_loss"]


def test_sweep_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["sweep", "--env", "hopper", "--seeds", "0..1", "--grid", "network.critic_hidden_width=8,16",
                 "--out", str(tmp_path)]) == 2
    assert "only float settings can vary" in capsys.readouterr().err


SHARDING_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax
    from toy_envs import CounterEnv
    from pderl_jax.cli import enable_compilation_cache
    from pderl_jax.config import load_config
    from pderl_jax.training.driver import RunOptions
    from pderl_jax.training.loop import train
    from pderl_jax.training.sweep import expand_runs, train_sweep
    enable_compilation_cache()
    base = load_config("hopper", {small!r})
    runs = expand_runs(base, {seeds!r}, {grid!r})
    out = {out!r}
    train_sweep(base, runs, CounterEnv(), out + "/sweep", RunOptions(progress=False), print_fn=print)
    if {single} is not None:
        train(runs[{single}].config, CounterEnv(), out + "/single", RunOptions(progress=False), print_fn=print)
    print("devices", len(jax.devices()))
""")


def run_on_forced_devices(tmp_path, devices: int, single: int | None) -> str:
    """SHARDING_SCRIPT in a process with `devices` forced host devices; what it printed."""
    script = SHARDING_SCRIPT.format(tests=str(Path(__file__).parent), small=SMALL, seeds=SWEEP_SEEDS,
                                    grid=SWEEP_GRID, single=single, out=str(tmp_path))
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"devices {devices}" in done.stdout and f"sharded over {devices} cpu devices" in done.stdout, done.stdout
    return done.stdout


def test_a_sweep_sharded_over_two_devices_matches_one_device(tmp_path, one_device):
    """Forced host devices: the sweep's run axis split over 2, every run's CSV as on one device."""
    run_on_forced_devices(tmp_path, 2, None)
    # a tolerance: a program sharded over 2 devices is another program than the one-device one
    for run in range(len(SWEEP_SEEDS) * len(SWEEP_GRID["learner.actor_lr"])):
        name = f"sweep/run_{run:03d}"
        assert_same_rows(read(tmp_path / name / "metrics.csv"), read(one_device[0] / name / "metrics.csv"), name)
    assert read(tmp_path / "sweep" / "runs.csv") and not (tmp_path / "single").exists()


@pytest.mark.slow  # ~80 s; the sweep over two devices runs in the default suite
def test_sharded_over_four_devices_matches_one_device(tmp_path, one_device):
    """Forced host devices: the sweep's run axis and a run's population axis sharded over 4."""
    printed = run_on_forced_devices(tmp_path, 4, SINGLE)
    assert "population sharded over 4" in printed
    # a tolerance: a program sharded over 4 devices is another program than the one-device one
    for name in ("sweep/run_000", "sweep/run_003", "single"):
        assert_same_rows(read(tmp_path / name / "metrics.csv"), read(one_device[0] / name / "metrics.csv"), name)


def test_a_stopped_sweep_resumes_row_for_row(one_device, tmp_path):
    """Stopped after 2 generations and resumed from sweep.json: every run's CSV equals the uninterrupted
    sweep's, and each run's own final checkpoint is that run's state."""
    out, base, runs, _ = one_device
    stopped = tmp_path / "stopped"
    first = train_sweep(base, runs, CounterEnv(), stopped, RunOptions(progress=False, max_generations=2),
                        print_fn=lambda _: None)
    assert first and all(s["interrupted"] for s in first) and not (stopped / "runs.csv").exists()
    assert [len(read(stopped / f"run_{r.index:03d}" / "metrics.csv")) for r in runs] == [2] * len(runs)
    with pytest.raises(ConfigError, match="already holds a sweep.*--resume"):
        train_sweep(base, runs, CounterEnv(), stopped, QUIET, print_fn=lambda _: None)
    recorded_base, recorded_runs, environment, recorded_options = read_sweep(stopped)
    assert recorded_base == base and [r.config for r in recorded_runs] == [r.config for r in runs]
    assert environment["name"] == "CounterEnv" and recorded_options["max_generations"] == 2
    final = train_sweep(recorded_base, recorded_runs, CounterEnv(), stopped, QUIET, resume=True,
                        print_fn=lambda _: None)
    assert not any(s["interrupted"] for s in final)
    columns = [c for c in read(out / "sweep" / "run_000" / "metrics.csv")[0] if c != "wall_s"]
    for run in runs:
        name = f"run_{run.index:03d}/metrics.csv"
        resumed, whole = read(stopped / name), read(out / "sweep" / name)
        assert [[r[c] for c in columns] for r in resumed] == [[r[c] for c in columns] for r in whole], name
    assert read(stopped / "runs.csv") == read(out / "sweep" / "runs.csv")

    # run SINGLE's own checkpoint holds its state: close to the same run trained alone, not another run's
    trainer = Trainer(runs[SINGLE].config, CounterEnv())
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    alone, _ = Checkpointer(out / "single").restore_latest(like)
    swept, meta = Checkpointer(stopped / f"run_{SINGLE:03d}").restore_latest(like)
    other, _ = Checkpointer(stopped / "run_000").restore_latest(like)
    last = read(stopped / f"run_{SINGLE:03d}" / "metrics.csv")[-1]
    assert int(swept.generation) == int(last["generation"]) and int(swept.frames) == int(last["frames"])
    def members(state):
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.evolution.population.members)])
    np.testing.assert_allclose(members(swept), members(alone), rtol=1e-3, atol=1e-4)
    assert np.abs(members(other) - members(alone)).max() > 1e-2


def test_a_diverging_run_stops_the_sweep_naming_it_and_keeps_what_came_before(tmp_path):
    """One of two runs gets an absurd critic learning rate: the sweep stops naming that run, its seed and
    setting, the generation and the quantity; both runs' rows up to then stay, and nothing is
    checkpointed from the divergence on."""
    base = load_config("hopper", {**SMALL, "frames": 100_000, "learner.learning_starts": 150})
    runs = expand_runs(base, [4], {"learner.critic_lr": [1e-3, 1e30]})
    options = RunOptions(progress=False, max_generations=30, checkpoint=CheckpointOptions(every=1, keep=50))
    with pytest.raises(TrainingDiverged, match=r"run 1 \(seed 4, learner.critic_lr=1e\+30\): generation \d+: ") as error:
        train_sweep(base, runs, CounterEnv(), tmp_path, options, print_fn=lambda _: None)
    message = str(error.value)
    assert "run 0" not in message and "sweep stopped" in message
    bad = int(message.split("generation ")[1].split(":")[0])
    assert bad > 1 and Checkpointer(tmp_path).steps() == list(range(1, bad))
    assert f"last good checkpoint is generation {bad - 1}" in message
    healthy, diverged = (read(tmp_path / f"run_{i:03d}" / "metrics.csv") for i in (0, 1))
    assert len(healthy) == len(diverged) == bad  # the bad generation is logged, never checkpointed
    assert all(np.isfinite(float(row[c])) for row in healthy for c in ("champion_test", "rl_test", "critic_loss")
               if row[c] != "nan")
    assert not (tmp_path / "runs.csv").exists()


def test_sweep_resume_refuses_new_settings(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path), "--seeds", "0..1", "--frames", "100"]) == 2
    err = capsys.readouterr().err
    assert "continues as configured in its sweep.json; drop --seeds, --frames" in err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "sweep.json not found" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text('{"config": {"seed": "zero"}}')
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is not a sweep record" in capsys.readouterr().err
