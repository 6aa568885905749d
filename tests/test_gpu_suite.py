"""The accelerator suite's smoke run: every step of benchmarks/gpu_suite.py at tiny sizes, on CPU."""

import json
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_suite.py"


def test_the_gpu_suite_runs_every_step_at_smoke_sizes(tmp_path):
    out = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, str(SUITE), "--smoke", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and report["card"]["device_kind"] and report["card"]["jax"]
    steps = report["steps"]
    assert list(steps) == ["single-mjx", "single-brax", "seeds-mjx", "seeds-brax", "population-mjx"]
    for name in ("single-mjx", "single-brax"):
        step = steps[name]
        assert step["frames_per_s"] > 0 and step["compile_s"] > 0 and step["cached_compile_s"] > 0, (name, step)
        # HalfCheetah never terminates: 4 members x 1 episode of 5 steps, plus the exploration episode
        assert step["frames_per_generation"] == 25, (name, step)
    assert "MJX" in steps["single-mjx"]["environment"] and "brax" in steps["single-brax"]["environment"]
    for name in ("seeds-mjx", "seeds-brax"):
        assert steps[name]["seeds"] == 2 and steps[name]["frames_per_s"] > 0, (name, steps[name])
    rows = steps["population-mjx"]["rows"]
    assert [r["pop_size"] for r in rows] == [3] and all(r["seconds"] > 0 for r in rows)
    assert all(r["frames"] == 5 * r["pop_size"] for r in rows), rows
    assert "| single-mjx |" in done.stdout and "written:" in done.stdout
