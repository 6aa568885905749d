"""The backend a command runs on: the one asked for, else the fastest correct one, printed with the reason."""

import jax
import pytest

import pderl_jax.training.loop
import pderl_jax.training.sweep
from pderl_jax.cli import main
from pderl_jax.config import ConfigError
from pderl_jax.envs import CPU_SINGLE_RUN_BACKEND, choose_backend


def test_the_backend_asked_for_else_the_fastest_correct_one(monkeypatch):
    assert choose_backend("brax") == ("brax", "as asked (--backend)")
    assert choose_backend("gymnasium")[0] == "native" and choose_backend("mjx", vmapped=True)[0] == "mjx"
    assert choose_backend(None, physics="spring")[0] == "brax"  # a brax physics pipeline means brax
    assert choose_backend(None, vmapped=True)[0] == "mjx"  # vmapped runs need JAX physics
    for platform, expected in (("gpu", "mjx"), ("tpu", "mjx"), ("cpu", CPU_SINGLE_RUN_BACKEND)):
        monkeypatch.setattr(jax, "default_backend", lambda platform=platform: platform)
        assert choose_backend()[0] == expected, platform
    with pytest.raises(ConfigError, match="unknown backend 'bullet'; choose one of mjx, native, brax"):
        choose_backend("bullet")


@pytest.mark.parametrize("argv, printed", [
    (["train", "--env", "Hopper-v5"], f"backend {CPU_SINGLE_RUN_BACKEND}: a single run on CPU"),
    (["train", "--env", "hopper", "--physics", "spring"], "backend brax: --physics spring is a brax physics"),
    (["train", "--env", "hopper", "--backend", "mjx"], "backend mjx: as asked (--backend)"),
    (["sweep", "--env", "hopper", "--seeds", "0..1"], "backend mjx: its runs are vmapped together"),
])
def test_commands_print_the_backend_they_chose_and_why(argv, printed, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    seen = []
    monkeypatch.setattr(pderl_jax.training.loop, "train", lambda config, env, *a, **k: seen.append(env) or
                        {"interrupted": False})
    monkeypatch.setattr(pderl_jax.training.sweep, "train_sweep", lambda base, runs, env, *a, **k: seen.append(env))
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert printed in capsys.readouterr().out
    assert seen[0].backend == {"native": "gymnasium"}.get(printed.split()[1][:-1], printed.split()[1][:-1])
