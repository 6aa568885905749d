"""Several processes with jax.distributed: two processes on 127.0.0.1 with CPU collectives through gloo.

The commands are the README's multi-host section: a run whose population of 4 is split over two
processes loses process 1 (killed): process 0 exits naming it, both resume, and the CSV equals one
process's (to float32 rounding: the split programs are partitioned differently); a 4-seed sweep split
over two processes writes the CSVs of one process (slow); a process that never joins, an id out of
range and settings that differ between processes are refused with a message. Every process has a
bounded timeout and is killed at the end.
"""

import csv
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import BRAX_HOPPER, TINY

from pderl_jax.cli import main

SMALL = ["evolution.pop_size=4", "evolution.elite_fraction=0.25", "evolution.num_evals=1", "evolution.sync_period=2",
         "evolution.genetic_memory_capacity=64", "evolution.distill_batch_size=8", "evolution.distill_epochs=1",
         "evolution.proximal_batch_size=16", "learner.replay_capacity=4096", "learner.batch_size=16",
         "learner.learning_starts=32", "network.actor_hidden=16,16", "network.critic_input_width=8",
         "network.critic_hidden_width=8"]
SWEEP = ["sweep", *BRAX_HOPPER, "--backend", "brax", "--seeds", "0..3", "--frames", "300", "--set", *SMALL]
# The settings of the shared brax run (conftest.py): the one-process reference of a split run is its
# program, which the session's compilation cache holds if that run has finished compiling by then.
TRAIN = ["train", *BRAX_HOPPER, "--backend", "brax", "--checkpoint-every", "2", "--set", *TINY]
EXACT = ["generation", "frames", "synced"]
TIMEOUT_S = 240  # per process group; every process is killed past it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, processes=2, join_timeout=20, port=None, ids=None):
    """`pderl-jax ARGS` as `processes` processes joined at a free port on 127.0.0.1."""
    port = port or free_port()
    group = []
    for i in (range(processes) if ids is None else ids):
        command = [sys.executable, "-m", "pderl_jax.cli", *args, "--coordinator", f"127.0.0.1:{port}",
                   "--num-processes", str(processes), "--process-id", str(i), "--join-timeout", str(join_timeout)]
        group.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    return group


def finish(group, timeout=TIMEOUT_S):
    """(exit status, stdout, stderr) of each process; all are killed after `timeout` seconds."""
    deadline, results = time.monotonic() + timeout, []
    try:
        for process in group:
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((process.returncode, out, err))
    finally:
        for process in group:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return results


def run(args, **kwargs):
    results = finish(start(args, **kwargs))
    for i, (code, _, err) in enumerate(results):
        assert code == 0, f"process {i} exited with {code}:\n{err[-3000:]}"
    return results


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_csv(a, b, where):
    rows_a, rows_b = read(a), read(b)
    assert len(rows_a) == len(rows_b) > 0, where
    for x, y in zip(rows_a, rows_b):
        assert [x[c] for c in EXACT] == [y[c] for c in EXACT], where
        numeric = [c for c in x if c not in (*EXACT, "wall_s")]
        np.testing.assert_allclose([float(x[c]) for c in numeric], [float(y[c]) for c in numeric], rtol=1e-3,
                                   atol=1e-4, err_msg=where)


@pytest.mark.slow  # ~3 min on 2 cores; by default: two processes in the test below, a sweep over devices in test_sweep.py
def test_a_sweep_split_over_two_processes_writes_the_csvs_of_one_process(tmp_path):
    results = run([*SWEEP, "--out", str(tmp_path / "two"), "--no-progress"])
    assert "sharded over 2 cpu devices in 2 processes" in results[0][1], results[0][1]
    assert "sweep:" not in results[1][1] and "done:" not in results[1][1], "only process 0 reports"
    assert main([*SWEEP, "--out", str(tmp_path / "one")]) == 0
    for i in range(4):
        assert_same_csv(tmp_path / "two" / f"run_{i:03d}" / "metrics.csv",
                        tmp_path / "one" / f"run_{i:03d}" / "metrics.csv", f"run {i}")
    assert read(tmp_path / "two" / "runs.csv")[3]["seed"] == "3"


def test_a_killed_process_stops_the_other_and_the_split_run_resumes_as_one_process_runs(tmp_path):
    """A run whose population is split over two processes; process 1 is killed once generation 2 is
    checkpointed: process 0 exits naming it, both resume, and the CSV equals one process's run."""
    out, endless = tmp_path / "two", [*TRAIN, "--frames", "100000000"]
    join_timeout = 20  # also how long a silent process may take to count as lost
    group = start([*endless, "--out", str(out)], join_timeout=join_timeout)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "checkpoints" / "2").is_dir():  # orbax renames a checkpoint into place once complete
            if time.monotonic() > deadline or any(p.poll() is not None for p in group):
                pytest.fail(f"the run did not reach generation 2: {[r[2][-2000:] for r in finish(group, 1)]}")
            time.sleep(0.2)
        os.killpg(group[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        code, printed, err = finish(group[:1], timeout=60)[0]
        waited = time.monotonic() - killed
    finally:
        finish(group, timeout=1)
    assert code == 4, err[-3000:]
    assert "process 0 of 2 lost contact with process 1" in err and "--resume" in err, err[-3000:]
    assert waited < 2 * join_timeout + 20, f"took {waited:.0f} s"  # the coordinator's verdict, then the exit
    assert "population sharded over 2 cpu devices in 2 processes" in printed, printed
    generations = 8  # past the generations the killed run can have checkpointed in the moment before the kill
    results = run(["train", "--resume", str(out), "--generations", str(generations), "--no-progress"])
    assert "resuming from generation" in results[0][1], results[0][1]
    assert main([*endless, "--generations", str(generations), "--out", str(tmp_path / "one")]) == 0
    assert len(read(out / "metrics.csv")) == generations
    assert_same_csv(out / "metrics.csv", tmp_path / "one" / "metrics.csv", "population over two processes")


def test_bad_groups_are_refused_with_a_message(tmp_path, capsys):
    for flags, message in ((["--process-id", "2", "--num-processes", "2", "--coordinator", "127.0.0.1:1"],
                            "--process-id 2 is out of range"),
                           (["--process-id", "0", "--num-processes", "2", "--coordinator", "localhost"],
                            "must be HOST:PORT"),
                           (["--process-id", "0"], "add --coordinator, --num-processes")):
        assert main([*SWEEP, "--out", str(tmp_path / "x"), *flags]) == 2
        assert message in capsys.readouterr().err
    started = time.monotonic()
    code, _, err = finish(start(SWEEP, join_timeout=3, ids=[0]), timeout=60)[0]
    assert code == 2 and "process 0 of 2 waited 3 s" in err and "process (1) never joined" in err, err[-2000:]
    assert time.monotonic() - started < 30
    port = free_port()
    group = start([*SWEEP, "--out", str(tmp_path / "a"), "--frames", "300"], port=port, ids=[0]) + \
        start([*SWEEP, "--out", str(tmp_path / "a"), "--frames", "400"], port=port, ids=[1])
    for code, _, err in finish(group, timeout=120):
        assert code == 2 and "different sweep settings: process(es) [1] differ" in err, err[-2000:]


# MJX is the sweeps' default backend; each process must build the task's model and data on its own device.
MJX = ["--env", "hopper", "--backend", "mjx", "--episode-length", "20"]
MJX_SWEEP = ["sweep", *MJX, "--seeds", "0..1", "--frames", "100", "--set", *SMALL]


def test_an_mjx_sweep_split_over_two_processes_writes_the_csvs_of_one_process(tmp_path):
    results = run([*MJX_SWEEP, "--out", str(tmp_path / "two"), "--no-progress"])
    assert "sharded over 2 cpu devices in 2 processes" in results[0][1], results[0][1]
    assert main([*MJX_SWEEP, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    for i in range(2):
        assert_same_csv(tmp_path / "two" / f"run_{i:03d}" / "metrics.csv",
                        tmp_path / "one" / f"run_{i:03d}" / "metrics.csv", f"MJX run {i}")


@pytest.mark.slow  # ~4 min on 2 cores: two more MJX programs
def test_mjx_train_and_compare_over_two_processes_write_the_csvs_of_one_process(tmp_path):
    train = ["train", *MJX, "--frames", "100", "--seed", "2", "--set", *SMALL]
    run([*train, "--out", str(tmp_path / "two"), "--no-progress"])
    assert main([*train, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    assert_same_csv(tmp_path / "two" / "metrics.csv", tmp_path / "one" / "metrics.csv", "MJX train")
    compare = ["compare", *MJX, "--methods", "pderl", "--seeds", "2", "--frames", "100", "--set", *SMALL]
    run([*compare, "--out", str(tmp_path / "c2")])
    assert main([*compare, "--out", str(tmp_path / "c1")]) == 0
    for i in range(2):
        assert_same_csv(tmp_path / "c2" / "pderl" / f"run_{i:03d}" / "metrics.csv",
                        tmp_path / "c1" / "pderl" / f"run_{i:03d}" / "metrics.csv", f"MJX compare run {i}")
