"""Checkpoints and the run's life cycle: exact resume, kill -9 mid-write, Ctrl-C, damage, NaN guard."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_envs import CounterEnv

from pderl_jax.config import ConfigError, TrainingDiverged, load_config
from pderl_jax.training import Trainer
from pderl_jax.training.checkpoint import FORMAT, CheckpointFormatError, CheckpointOptions, Checkpointer
from pderl_jax.analysis import run_hooks
from pderl_jax.training.driver import RunOptions, nonfinite_quantities, run_health
from pderl_jax.training.loop import train
from pderl_jax.training.metrics import CSV_COLUMNS
from pderl_jax.training.run_folder import claim_out_dir, run_record

TESTS = Path(__file__).parent
SMALL = {"evolution.pop_size": 4, "evolution.elite_fraction": 0.25, "evolution.num_evals": 2,
         "evolution.sync_period": 2, "evolution.genetic_memory_capacity": 64, "evolution.distill_batch_size": 8,
         "evolution.distill_epochs": 1, "evolution.proximal_batch_size": 16, "learner.replay_capacity": 4096,
         "learner.batch_size": 16, "learner.learning_starts": 32, "network.actor_hidden": "16,16",
         "network.critic_input_width": 8, "network.critic_hidden_width": 8, "frames": 100_000}
QUIET = dict(print_fn=lambda _: None)


def small_config(seed, **extra):
    return load_config("hopper", {**SMALL, "seed": seed, **extra})


def rows_without_wall(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def leaves_equal(a, b):
    def plain(x):
        x = jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        return np.asarray(x)
    return all(np.array_equal(plain(x), plain(y), equal_nan=True) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def trained_state(seed, generations):
    trainer = Trainer(small_config(seed), CounterEnv())
    state = jax.jit(trainer.init)(jax.random.key(seed))
    step = jax.jit(trainer.generation)
    for _ in range(generations):
        state, _ = step(state)
    return trainer, state


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 4-generation run, the reference every resumed run must reproduce.

    The comparisons with it are exact: a resumed run compiles the same generation program (same
    settings, one generation per call, one device) and restores its state bit for bit."""
    seed = int(np.random.default_rng().integers(1000))
    out = tmp_path_factory.mktemp("reference")
    train(small_config(seed), CounterEnv(), out, RunOptions(progress=False, max_generations=4), **QUIET)
    return seed, rows_without_wall(out / "metrics.csv")


def test_save_and_restore_give_back_every_array_and_the_key(tmp_path):
    seed = int(np.random.default_rng().integers(1000))
    trainer, state = trained_state(seed, 2)
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    keeper = Checkpointer(tmp_path, CheckpointOptions(keep=2))
    keeper.save(state, {"wall_s": 1.5})
    restored, meta = keeper.restore_latest(like)
    assert leaves_equal(restored, state) and jax.tree.structure(restored) == jax.tree.structure(state)
    assert meta["wall_s"] == 1.5 and meta["replay"] is True
    # the restored key draws the same numbers (exact: one sampling program on equal key bits)
    assert np.array_equal(jax.random.normal(restored.key, (3,)), jax.random.normal(state.key, (3,)))
    # without the replay buffer: everything else exact, the buffer the given empty one
    lean = Checkpointer(tmp_path / "lean", CheckpointOptions(replay=False))
    lean.save(state, {"wall_s": 0.0})
    empty = jax.tree.map(jnp.zeros_like, state.replay)
    restored, meta = lean.restore_latest(like, fresh_replay=empty)
    assert meta["replay"] is False and leaves_equal(restored.replace(replay=state.replay), state)
    assert int(restored.replay.size) == 0 < int(state.replay.size)


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    trainer, state = trained_state(1, 0)
    keeper = Checkpointer(tmp_path, CheckpointOptions(keep=2))
    for generation in range(1, 6):
        keeper.save(state.replace(generation=jnp.int32(generation)), {"wall_s": 0.0})
    assert keeper.steps() == [4, 5] and sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "5"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "meta"])
def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage):
    trainer, state = trained_state(2, 1)
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    keeper = Checkpointer(tmp_path, CheckpointOptions(keep=3))
    keeper.save(state, {"wall_s": 1.0})
    newer = state.replace(generation=state.generation + 1, frames=state.frames + 7)
    keeper.save(newer, {"wall_s": 2.0})
    files = sorted((p for p in (tmp_path / "checkpoints" / "2").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    if damage == "meta":
        target = next(p for p in files if p.parent.name == "meta")
        target.write_text("{not json")
    else:
        target = files[-1]  # the largest: array data
        data = bytearray(target.read_bytes())
        if damage == "flip":
            index = np.random.default_rng().integers(len(data) // 4, len(data))
            data[index] ^= 0xFF
            target.write_bytes(bytes(data))
        elif damage == "truncate":
            target.write_bytes(bytes(data[: len(data) // 2]))
        else:
            target.unlink()
    messages = []
    restored, meta = Checkpointer(tmp_path).restore_latest(like, report=messages.append)
    assert int(restored.generation) == 1 and meta["wall_s"] == 1.0 and leaves_equal(restored, state)
    assert len(messages) == 1 and "generation 2 is damaged" in messages[0]
    assert (tmp_path / "checkpoints_damaged" / "2").is_dir() and Checkpointer(tmp_path).steps() == [1]


def test_a_checkpoint_of_another_format_is_refused_with_the_fix_and_kept(tmp_path):
    """Written by a version with another layout of the state: a clear error, not a traceback, and the
    checkpoint is neither set aside as damaged nor replaced by an older one."""
    trainer, state = trained_state(4, 1)
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    keeper = Checkpointer(tmp_path)
    keeper.save(state, {"wall_s": 0.0})
    keeper.save(state.replace(generation=state.generation + 1), {"wall_s": 1.0})
    meta = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    meta.write_text(meta.read_text().replace(f'"format": {FORMAT}', '"format": 1'))
    assert FORMAT != 1 and '"format": 1' in meta.read_text()
    expected = r"format 1 \(pderl-jax 0.1\), this version of pderl-jax reads format 2.*--force"
    with pytest.raises(CheckpointFormatError, match=expected):
        Checkpointer(tmp_path).restore_latest(like, report=pytest.fail)
    assert Checkpointer(tmp_path).steps() == [1, 2] and not (tmp_path / "checkpoints_damaged").exists()
    assert issubclass(CheckpointFormatError, ConfigError)  # the CLI prints it as one line


def test_a_partial_write_is_never_listed(tmp_path):
    trainer, state = trained_state(3, 1)
    keeper = Checkpointer(tmp_path)
    keeper.save(state, {"wall_s": 0.0})
    # what a write killed before its final rename leaves behind
    shutil.copytree(tmp_path / "checkpoints" / "1", tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234567")
    reopened = Checkpointer(tmp_path)
    assert reopened.steps() == [1]
    restored, _ = reopened.restore_latest(jax.eval_shape(trainer.init, jax.random.key(0)))
    assert int(restored.generation) == 1


def test_two_generations_then_resume_equals_four_in_a_row(tmp_path, reference_run):
    seed, reference = reference_run
    config = small_config(seed)
    train(config, CounterEnv(), tmp_path, RunOptions(progress=False, max_generations=2), **QUIET)
    assert len(rows_without_wall(tmp_path / "metrics.csv")) == 2
    summary = train(config, CounterEnv(), tmp_path, RunOptions(progress=False, max_generations=4), resume=True,
                    **QUIET)
    assert rows_without_wall(tmp_path / "metrics.csv") == reference  # exact: same program, restored state
    assert summary["generations"] == 4 and not summary["interrupted"]


def test_the_operator_study_during_a_run_leaves_the_training_untouched(tmp_path, reference_run):
    seed, reference = reference_run
    train(small_config(seed), CounterEnv(), tmp_path, RunOptions(progress=False, max_generations=4, analyze_every=3,
                                                                  analyze_draws=2), hooks=run_hooks(), **QUIET)
    assert sorted(p.name for p in (tmp_path / "analysis").iterdir()) == ["gen_00003"]  # every 3rd generation
    # Exact: the same generation program from the same state; the study draws from its own key.
    assert rows_without_wall(tmp_path / "metrics.csv") == reference
    with pytest.raises(ConfigError, match="--analyze-every needs an analysis hook"):  # training imports no analysis
        train(small_config(seed), CounterEnv(), tmp_path / "bare", RunOptions(progress=False, analyze_every=3), **QUIET)


def test_resume_drops_rows_written_after_the_last_checkpoint(tmp_path, reference_run):
    """A run killed between checkpoints wrote CSV rows the checkpoint does not cover."""
    seed, reference = reference_run
    config = small_config(seed)
    options = RunOptions(progress=False, max_generations=3, checkpoint=CheckpointOptions(every=2))
    train(config, CounterEnv(), tmp_path, options, **QUIET)
    shutil.rmtree(tmp_path / "checkpoints" / "3")  # as if killed after generation 3's row, before its checkpoint
    train(config, CounterEnv(), tmp_path, RunOptions(progress=False, max_generations=4), resume=True, **QUIET)
    assert rows_without_wall(tmp_path / "metrics.csv") == reference  # exact: same program, restored state


CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    sys.path.insert(0, {tests!r})
    from toy_envs import CounterEnv
    from test_checkpoint import small_config
    from pderl_jax.cli import enable_compilation_cache
    from pderl_jax.training import checkpoint
    from pderl_jax.training.checkpoint import CheckpointOptions
    from pderl_jax.training.driver import RunOptions
    from pderl_jax.training.loop import train

    enable_compilation_cache()
    mode, kill_at, delay = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if mode == "kill":  # SIGKILL ourselves `delay` seconds into the write of generation kill_at's checkpoint
        original = checkpoint.Checkpointer.save
        def save(self, state, meta):
            if int(state.generation) == kill_at:
                threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
                original(self, state, meta)
                time.sleep(60)
            original(self, state, meta)
        checkpoint.Checkpointer.save = save
    options = RunOptions(progress=False, max_generations=4 if mode == "kill" else 10_000,
                         checkpoint=CheckpointOptions(every=1))
    summary = train(small_config({seed}), CounterEnv(), sys.argv[1], options, print_fn=print)
    print("INTERRUPTED" if summary["interrupted"] else "FINISHED", summary["generations"], flush=True)
""")


def run_child(tmp_path, seed, *args):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), seed=seed))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("delay", [0.004, pytest.param(0.0, marks=pytest.mark.slow)])  # mid-write; at its start
def test_kill_9_during_a_checkpoint_write_then_resume(tmp_path, reference_run, delay):
    seed, reference = reference_run
    child = run_child(tmp_path, seed, "kill", "3", str(delay))
    output, _ = child.communicate(timeout=600)
    assert child.returncode == -signal.SIGKILL, output
    steps = Checkpointer(tmp_path / "run").steps()
    assert steps[:2] == [1, 2] and steps[-1] in (2, 3)  # generation 3's checkpoint is complete or absent
    messages = []
    train(small_config(seed), CounterEnv(), tmp_path / "run", RunOptions(progress=False, max_generations=4),
          resume=True, print_fn=messages.append)
    assert any(m.startswith(f"resuming from generation {steps[-1]}") for m in messages)
    assert rows_without_wall(tmp_path / "run" / "metrics.csv") == reference  # child: our XLA flags, same program


def test_ctrl_c_finishes_the_generation_checkpoints_and_resumes_exactly(tmp_path, reference_run):
    seed, reference = reference_run
    child = run_child(tmp_path, seed, "sigint", "0", "0")
    metrics = tmp_path / "run" / "metrics.csv"
    deadline = time.time() + 600
    while time.time() < deadline and child.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # header + one generation
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=600)
    assert child.returncode == 0 and "INTERRUPTED" in output, output
    done = len(rows_without_wall(metrics))
    assert done >= 1 and Checkpointer(tmp_path / "run").steps()[-1] == done  # the last finished generation
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["generations"] == done
    train(small_config(seed), CounterEnv(), tmp_path / "run",
          RunOptions(progress=False, max_generations=max(4, done)), resume=True, **QUIET)
    assert rows_without_wall(metrics)[:4] == reference  # same program, as above


def test_divergence_stops_the_run_naming_generation_and_quantity(tmp_path):
    config = small_config(4, **{"learner.critic_lr": 1e30, "learner.actor_lr": 1e30, "learner.learning_starts": 150})
    options = RunOptions(progress=False, max_generations=30, checkpoint=CheckpointOptions(every=1, keep=50))
    with pytest.raises(TrainingDiverged, match=r"generation (\d+): .*(critic|actor|parameters)") as error:
        train(config, CounterEnv(), tmp_path, options, **QUIET)
    bad = int(str(error.value).split("generation ")[1].split(":")[0])
    rows = rows_without_wall(tmp_path / "metrics.csv")
    steps = Checkpointer(tmp_path).steps()
    assert steps == list(range(1, bad)) and len(rows) == bad  # the bad generation is logged, never checkpointed
    assert f"last good checkpoint is generation {bad - 1}" in str(error.value)


def test_nonfinite_quantities_names_each_injected_fault():
    trainer, state = trained_state(5, 3)
    metrics = jax.eval_shape(lambda s: jax.lax.scan(lambda c, _: trainer.generation(c), s, None, length=2)[1], state)
    clean = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), metrics)
    assert nonfinite_quantities(clean, run_health(state), 7) == []
    rng = np.random.default_rng()
    for name, label in (("fitness", "fitness"), ("champion_test", "champion test"), ("rl_test", "rl test"),
                        ("critic_loss", "critic loss"), ("actor_loss", "actor loss")):
        values = np.ones(getattr(clean, name).shape, np.float32)
        row = int(rng.integers(2))
        values.reshape(2, -1)[row, 0] = np.inf
        found = nonfinite_quantities(clean.replace(**{name: values}), run_health(state), 7)
        assert found == [f"generation {7 + row}: {label}"], (name, found)
    nan_loss = np.ones(2, np.float32)
    nan_loss[1] = np.nan  # NaN critic loss after updates started: a fault; NaN actor loss: "no actor step"
    assert nonfinite_quantities(clean.replace(critic_loss=nan_loss), run_health(state), 7) == ["generation 8: critic loss"]
    assert nonfinite_quantities(clean.replace(actor_loss=nan_loss), run_health(state), 7) == []
    for part, label in (("population", "population parameters"), ("critic", "critic parameters"),
                        ("actor", "RL actor parameters"), ("critic_target", "target network parameters")):
        def poison(tree):
            leaves, treedef = jax.tree.flatten(tree)
            i = int(rng.integers(len(leaves)))
            leaves[i] = leaves[i].at[(0,) * leaves[i].ndim].set(jnp.nan)
            return jax.tree.unflatten(treedef, leaves)
        if part == "population":
            evolution = state.evolution
            broken = state.replace(evolution=evolution.replace(population=evolution.population.replace(
                members=poison(evolution.population.members))))
        else:
            broken = state.replace(learner=state.learner.replace(**{part: poison(getattr(state.learner, part))}))
        assert nonfinite_quantities(clean, run_health(broken), 7) == [f"generation {int(state.generation)}: {label}"]


def test_an_output_folder_holding_a_run_is_not_overwritten_without_force(tmp_path):
    env = CounterEnv()
    record = run_record(small_config(1), env)
    claim_out_dir(tmp_path, record, force=False)  # empty folder: fine
    (tmp_path / "metrics.csv").write_text("generation\n1\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds this run .*--resume .*--force"):
        claim_out_dir(tmp_path, record, force=False)
    with pytest.raises(ConfigError, match="holds a different run"):
        claim_out_dir(tmp_path, run_record(small_config(2), env), force=False)
    (tmp_path / "checkpoints").mkdir()
    claim_out_dir(tmp_path, run_record(small_config(2), env), force=True)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "notes.txt"]  # only the run's own files went
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 2
    with pytest.raises(ConfigError, match="is a file"):
        claim_out_dir(tmp_path / "notes.txt", record, force=True)


@pytest.mark.parametrize("options, message", [
    (RunOptions(generations_per_call=0), "--generations-per-call"),
    (RunOptions(max_generations=-1), "--generations"),
    (RunOptions(analyze_every=-2), "--analyze-every"),
    (RunOptions(checkpoint=CheckpointOptions(every=-1)), "--checkpoint-every"),
    (RunOptions(checkpoint=CheckpointOptions(keep=0)), "--keep-checkpoints"),
])
def test_run_options_are_checked_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        train(small_config(0), CounterEnv(), tmp_path / "run", options, **QUIET)
    assert not (tmp_path / "run").exists()


def test_csv_header_is_kept_when_resuming(tmp_path, reference_run):
    seed, _ = reference_run
    train(small_config(seed), CounterEnv(), tmp_path, RunOptions(progress=False, max_generations=1), **QUIET)
    train(small_config(seed), CounterEnv(), tmp_path, RunOptions(progress=False, max_generations=2), resume=True,
          **QUIET)
    with open(tmp_path / "metrics.csv") as f:
        lines = f.read().splitlines()
    assert lines[0].split(",") == CSV_COLUMNS and len(lines) == 3
