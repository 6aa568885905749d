"""Test-session setup: cheap compilation, one compilation cache for the session, shared runs.

- XLA's CPU backend compiles at LLVM optimisation level 0: the tests' programs are tiny, so
  they run as fast either way, and compiling takes about a third less time. Set
  `PDERL_JAX_TEST_XLA_O=2` (or any level) to test the optimised build instead. Where the installed
  jaxlib has it, XLA's older fusion emitter halves the compile time again.
- The persistent compilation cache lives in a temporary folder made for this session (set
  `PDERL_JAX_TEST_CACHE_DIR` to keep one between sessions), so that every identical program,
  also in the subprocesses and command-line runs the tests start, compiles once.
- `brax_run` is one short `pderl-jax train` run on brax Hopper that every test of the run
  commands (train, resume, evaluate, render, plot) reads, instead of each training its own.
- With pytest-xdist (`-n 2`, as pyproject.toml sets), each test file runs whole on one worker,
  so its module fixtures are built once; the two files that read `brax_run` share a worker; the
  files that compile the most start first.
"""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_level = os.environ.get("PDERL_JAX_TEST_XLA_O", "0")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level={_level}".strip()


def _xla_accepts(flag: str) -> bool:
    """Whether this jaxlib knows an XLA flag: XLA stops at start-up on a flag it does not know."""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} {flag}", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True).returncode == 0


# XLA's older CPU fusion emitter: half a brax generation's compile time at level 0 (set once per session;
# the workers and subprocesses inherit it)
_OLDER_EMITTER = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"] and _xla_accepts(_OLDER_EMITTER):
    os.environ["XLA_FLAGS"] += f" {_OLDER_EMITTER}"

if "PDERL_JAX_TEST_CACHE_DIR" not in os.environ:  # made here, removed at the end of this session
    os.environ["PDERL_JAX_TEST_CACHE_DIR"] = tempfile.mkdtemp(prefix="pderl_jax_test_xla_")
    os.environ["PDERL_JAX_TEST_CACHE_OWNER"] = str(os.getpid())
CACHE_DIR = os.environ["PDERL_JAX_TEST_CACHE_DIR"]
os.environ["PDERL_JAX_CACHE_DIR"] = CACHE_DIR  # read by the CLI and by the subprocesses the tests start

from pderl_jax.cli import enable_compilation_cache, main  # noqa: E402  (after the environment is set)

enable_compilation_cache()

# The settings of every short brax run in the tests: a small population and networks, 20-step episodes.
TINY = ["evolution.pop_size=4", "evolution.genetic_memory_capacity=256", "learner.replay_capacity=10000",
        "network.actor_hidden=32,32", "network.critic_input_width=16", "network.critic_hidden_width=16"]
BRAX_HOPPER = ["--env", "hopper", "--physics", "spring", "--episode-length", "20", "--no-progress"]
BRAX_RUN_ARGS = [*BRAX_HOPPER, "--frames", "600", "--seed", "3", "--set", *TINY]


@dataclass(frozen=True)
class BraxRun:
    out: Path  # the run folder
    printed: str  # what `train` printed


@pytest.fixture(scope="session")
def brax_run(tmp_path_factory) -> BraxRun:
    """`pderl-jax train` on brax Hopper until 600 frames, with TensorBoard: the run every command test reads."""
    out = tmp_path_factory.mktemp("brax_run") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", *BRAX_RUN_ARGS, "--out", str(out), "--tensorboard"]) == 0
    return BraxRun(out, printed.getvalue())


# Files that share a worker, and the order in which the groups start (the longest first, so that
# the two workers finish together); the other files follow in their usual order.
SHARED_WORKER = {"test_run_commands": "brax_run", "test_train_cli": "brax_run"}
LONGEST_FIRST = ["test_mjx_env", "test_checkpoint", "test_multihost", "brax_run", "test_mjx_commands", "test_generation",
                 "test_gpu_suite", "test_compare", "test_sweep", "test_analysis"]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(config, items):
    def group(item):
        name = Path(str(item.fspath)).stem
        return SHARED_WORKER.get(name, name)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group(item), len(rank)))  # stable: file order otherwise kept


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("PDERL_JAX_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
