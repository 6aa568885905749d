"""The package as a wheel installs it: every module and every task config, away from the source tree."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds, unpacked as an installer would lay it out in site-packages. It is
    built from a copy of the checkout's tracked layout, so no earlier build folder can leak into it."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(ROOT / "pderl_jax", source / "pderl_jax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out / "dist")], check=True, cwd=out)
    wheels = list((out / "dist").glob("pderl_jax-*.whl"))
    assert len(wheels) == 1, wheels
    site = out / "site"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(site)
    return site


def test_the_wheel_holds_every_module_and_task_config(unpacked_wheel):
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pderl_jax").rglob("*") if p.suffix in (".py", ".toml")}
    packed = {p.relative_to(unpacked_wheel).as_posix() for p in (unpacked_wheel / "pderl_jax").rglob("*")
              if p.suffix in (".py", ".toml")}
    assert packed == source
    assert not (unpacked_wheel / "configs").exists()  # nothing outside the package


def test_an_installed_wheel_loads_every_task_config_away_from_the_source_tree(unpacked_wheel, tmp_path):
    script = ("import pderl_jax, pderl_jax.config as c\n"
              "print(pderl_jax.__file__)\n"
              "for task in c.TASKS:\n"
              "    config = c.load_config(task)\n"
              "    print(task, config.task, config.evolution.pop_size, config.learner.actor_lr)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(unpacked_wheel), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu",
                                 "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert Path(lines[0]).resolve().is_relative_to(unpacked_wheel.resolve())  # not the checkout
    from pderl_jax.config import TASKS, load_config

    for task, line in zip(TASKS, lines[1:], strict=True):
        expected = load_config(task)  # the checkout's files: the wheel carries the same values
        assert line.split() == [task, expected.task, str(expected.evolution.pop_size), str(expected.learner.actor_lr)]
