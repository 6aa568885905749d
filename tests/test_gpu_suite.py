"""The accelerator suite's smoke run at tiny sizes, on CPU: one brax step by default, every step with `-m slow`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_suite.py"


ALL_STEPS = ["single-mjx", "single-brax", "seeds-mjx", "seeds-brax", "population-mjx"]


def run_suite(tmp_path, steps):
    out = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, str(SUITE), "--smoke", "--steps", ",".join(steps), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and report["card"]["device_kind"] and report["card"]["jax"]
    assert list(report["steps"]) == steps
    for name in steps:
        assert f"| {name} |" in done.stdout, done.stdout
    assert "written:" in done.stdout
    return report["steps"]


def check_single(step, backend_word):
    assert step["frames_per_s"] > 0 and step["compile_s"] > 0 and step["cached_compile_s"] > 0, step
    # HalfCheetah never terminates: 4 members x 1 episode of 5 steps, plus the exploration episode
    assert step["frames_per_generation"] == 25, step
    assert backend_word in step["environment"], step


def test_the_gpu_suite_runs_a_brax_step_at_smoke_sizes(tmp_path):
    """The suite's machinery (card, a step in its own process, cold and cached compile, table, JSON) on
    its cheaper backend; the vmapped seeds and the populations with the other steps in `slow`."""
    steps = run_suite(tmp_path, ["single-brax"])
    check_single(steps["single-brax"], "brax")


@pytest.mark.slow
def test_the_gpu_suite_runs_every_step_at_smoke_sizes(tmp_path):
    steps = run_suite(tmp_path, ALL_STEPS)
    check_single(steps["single-mjx"], "MJX")
    check_single(steps["single-brax"], "brax")
    for name in ("seeds-mjx", "seeds-brax"):
        assert steps[name]["seeds"] == 2 and steps[name]["frames_per_s"] > 0, (name, steps[name])
    rows = steps["population-mjx"]["rows"]
    assert [r["pop_size"] for r in rows] == [3] and all(r["seconds"] > 0 for r in rows)
    assert all(r["frames"] == 5 * r["pop_size"] for r in rows), rows
