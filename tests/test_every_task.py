"""Every mode trains on every task (slow: one compilation per run).

Native MuJoCo runs compile no physics, so they cover the full task x mode product; on MJX and
brax, every task runs PDERL and every mode runs on Hopper.
"""

import csv
import math

import pytest

from pderl_jax.cli import main
from pderl_jax.config import MODES, TASKS

SMALL = ["evolution.pop_size=4", "evolution.genetic_memory_capacity=256", "learner.replay_capacity=20000",
         "learner.learning_starts=128", "evolution.sync_period=1", "evolution.num_evals=1", "network.actor_hidden=32,32",
         "network.critic_input_width=32", "network.critic_hidden_width=32"]


def check_run(tmp_path, task, mode, backend):
    out = tmp_path / f"{task}-{mode}-{backend}"
    assert main(["train", "--env", task, "--backend", backend, "--mode", mode, "--frames", "600",
                 "--episode-length", "40", "--seed", "0", "--out", str(out), "--no-progress", "--set", *SMALL]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 2 and int(rows[-1]["frames"]) > 600
    assert all(math.isfinite(float(r["champion_test"])) and math.isfinite(float(r["rl_test"])) for r in rows)
    assert math.isfinite(float(rows[-1]["critic_loss"]))  # the learner trained
    if mode in ("ddpg", "td3"):
        assert all(math.isnan(float(r["pop_mean"])) for r in rows)
    else:
        assert all(math.isfinite(float(r["pop_mean"])) for r in rows) and int(rows[-1]["synced"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", TASKS)
def test_every_mode_on_every_native_mujoco_task(task, mode, tmp_path):
    check_run(tmp_path, task, mode, "native")


JAX_BACKENDS = ("brax", "mjx")


@pytest.mark.slow
@pytest.mark.parametrize("backend", JAX_BACKENDS)
@pytest.mark.parametrize("task", TASKS)
def test_pderl_on_every_task_of_the_jax_backends(task, backend, tmp_path):
    check_run(tmp_path, task, "pderl", backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", JAX_BACKENDS)
@pytest.mark.parametrize("mode", [m for m in MODES if m != "pderl"])
def test_every_mode_on_hopper_of_the_jax_backends(mode, backend, tmp_path):
    check_run(tmp_path, "hopper", mode, backend)
