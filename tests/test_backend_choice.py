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
    assert choose_backend("native")[0] == "native" and choose_backend("mjx", vmapped=True)[0] == "mjx"
    assert choose_backend(None, physics="spring")[0] == "brax"  # a brax physics pipeline means brax
    assert choose_backend(None, vmapped=True)[0] == "mjx"  # vmapped runs need JAX physics
    for platform, expected in (("gpu", "mjx"), ("tpu", "mjx"), ("cpu", CPU_SINGLE_RUN_BACKEND)):
        monkeypatch.setattr(jax, "default_backend", lambda platform=platform: platform)
        assert choose_backend()[0] == expected, platform
    for unknown in ("bullet", "gymnasium"):  # one name for native MuJoCo
        with pytest.raises(ConfigError, match=f"unknown backend '{unknown}'; choose one of mjx, native, brax"):
            choose_backend(unknown)


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
    assert seen[0].backend == printed.split()[1][:-1]  # the environment's own name for its backend


def test_environment_options_reach_the_task_its_record_and_are_refused_where_they_do_not_apply():
    import json
    import math

    from pderl_jax.cli import parse_env_options
    from pderl_jax.envs import make_environment
    from pderl_jax.training.run_folder import environment_from_record, environment_record

    options = parse_env_options(["ctrl_cost_weight=0.2", "healthy_z_range=0.6,inf", "ls_iterations=8",
                                 "terminate_when_unhealthy=false", "contact_frames=mjx"])
    assert options["ctrl_cost_weight"] == 0.2 and options["ls_iterations"] == 8 and options["contact_frames"] == "mjx"
    assert options["healthy_z_range"][0] == 0.6 and math.isinf(options["healthy_z_range"][1])
    assert options["terminate_when_unhealthy"] is False
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_env_options(["ctrl_cost_weight"])

    env = make_environment("Hopper-v5", "mjx", options=options)
    again = environment_from_record(json.loads(json.dumps(environment_record(env))), "hopper")
    for task in (env, again):
        assert task.spec.ctrl_cost_weight == 0.2 and task.spec.healthy_z_range[0] == 0.6
        assert task._physics.model.opt.ls_iterations == 8 and task._physics.contact_frames == "mjx"
        assert task.spec.terminate_when_unhealthy is False
    native = make_environment("Hopper-v5", "native", options={"ctrl_cost_weight": 0.2})
    assert native._make()._ctrl_cost_weight == 0.2
    assert environment_from_record(environment_record(native), "hopper")._make()._ctrl_cost_weight == 0.2
    with pytest.raises(ConfigError, match="ls_iterations: options of the MJX backend only"):
        make_environment("hopper", "native", options={"ls_iterations": 8})
    with pytest.raises(ConfigError, match="rejects the options"):
        make_environment("hopper", "native", options={"nonsense": 1})
    with pytest.raises(ConfigError, match="has no option nonsense"):
        make_environment("hopper", "mjx", options={"nonsense": 1})
    with pytest.raises(ConfigError, match="brax's tasks take no environment options"):
        make_environment("hopper", "brax", options={"ctrl_cost_weight": 0.2})


def test_train_passes_environment_options_and_resume_keeps_them(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(pderl_jax.training.loop, "train", lambda config, env, *a, **k: seen.append(env) or
                        {"interrupted": False})
    assert main(["train", "--env", "hopper", "--backend", "native", "--env-option", "ctrl_cost_weight=0.3",
                 "--out", str(tmp_path)]) == 0
    assert seen[0].options == {"ctrl_cost_weight": 0.3}
    assert main(["train", "--env", "hopper", "--backend", "mjx", "--env-option", "healthy_reward",
                 "--out", str(tmp_path)]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--env-option", "ctrl_cost_weight=1"]) == 2
    assert "drop --env-option" in capsys.readouterr().err
