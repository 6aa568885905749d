"""Configs: paper Table 3/4 values, overrides, validation messages, memory estimate, CLI errors."""

import pytest

from pderl_jax.cli import main
from pderl_jax.config import TASKS, ConfigError, from_dict, load_config, override, to_dict, validate
from pderl_jax.training.footprint import memory_estimate

# task: (elite fraction, elites, xi, omega, sigma, frames) from Table 4 and the official budgets
TABLE_4 = {
    "swimmer": (0.1, 1, 1, 10, 0.1, 2_000_000),
    "halfcheetah": (0.1, 1, 1, 10, 0.1, 6_000_000),
    "hopper": (0.2, 2, 3, 1, 0.1, 4_000_000),
    "walker2d": (0.2, 2, 5, 1, 0.1, 6_000_000),
    "ant": (0.2, 2, 1, 1, 0.01, 6_000_000),
}


@pytest.mark.parametrize("task", TASKS)
def test_task_configs_match_table_4(task):
    config = load_config(task)
    evo = config.evolution
    assert (evo.elite_fraction, evo.num_elites, evo.num_evals, evo.sync_period, evo.mutation_sigma,
            config.frames) == TABLE_4[task]


def test_defaults_match_table_3():
    config = load_config("halfcheetah")
    evo, learner = config.evolution, config.learner
    assert (evo.pop_size, evo.genetic_memory_capacity, evo.distill_batch_size, evo.proximal_batch_size,
            evo.distill_epochs, evo.distill_lr, evo.mutation_prob, evo.tournament_size) == (
        10, 8000, 128, 256, 12, 1e-3, 0.9, 3)
    assert (learner.actor_lr, learner.critic_lr, learner.tau, learner.gamma, learner.batch_size,
            learner.replay_capacity, learner.learning_starts, learner.grad_clip_norm) == (
        5e-5, 5e-4, 0.001, 0.99, 128, 1_000_000, 640, 10.0)
    assert (learner.ou_theta, learner.ou_sigma, learner.ou_scale) == (0.15, 0.2, 0.3)
    assert config.mode == "pderl" and config.crossover == "distillation" and config.mutation == "proximal"


@pytest.mark.parametrize("mode,crossover,mutation", [
    ("pderl", "distillation", "proximal"), ("perl", "npoint", "proximal"),
    ("derl", "distillation", "gaussian"), ("erl", "npoint", "gaussian")])
def test_mode_selects_operators(mode, crossover, mutation):
    config = load_config("hopper", {"mode": mode})
    assert (config.crossover, config.mutation) == (crossover, mutation)


def test_overrides_coerce_strings_like_a_command_line():
    config = load_config("ant", {"learner.actor_lr": "1e-4", "network.actor_hidden": "64,32",
                                 "evolution.fix_elite_fitness": "true", "evolution.pop_size": "20"})
    assert config.learner.actor_lr == 1e-4
    assert config.network.actor_hidden == (64, 32)
    assert config.evolution.fix_elite_fitness is True
    assert config.evolution.pop_size == 20
    assert to_dict(from_dict(to_dict(config))) == to_dict(config)


@pytest.mark.parametrize("task,overrides,fragment", [
    ("pong", {}, "unknown task 'pong'"),
    ("hopper", {"evolution.elite_fraction": 1.0}, "evolution.elite_fraction = 1.0 must lie in (0, 1)"),
    ("hopper", {"evolution.pop_size": 1}, "evolution.pop_size"),
    ("hopper", {"evolution.pop_size": 4, "evolution.elite_fraction": 0.75}, "at most half the population"),
    ("hopper", {"evolution.genetic_memory_capacity": -5}, "evolution.genetic_memory_capacity"),
    ("hopper", {"learner.algorithm": "sac"}, "learner.algorithm = 'sac' is not allowed; choose one of ddpg, td3"),
    ("hopper", {"mode": "cem"}, "mode = 'cem' is not allowed"),
    ("hopper", {"evolution.pairing": "random"}, "evolution.pairing"),
    ("hopper", {"evolution.colour": 1}, "unknown setting(s) evolution.colour"),
    ("hopper", {"optimiser.lr": 1}, "unknown setting 'optimiser.lr'"),
    ("hopper", {"learner.batch_size": "many"}, "learner.batch_size = 'many' has the wrong type"),
    ("hopper", {"evolution.pop_size": 2.5}, "evolution.pop_size"),
    ("hopper", {"learner.tau": 1.5}, "learner.tau = 1.5 must lie in [0, 1]"),
    ("hopper", {"evolution.mutation_sigma": float("nan")}, "evolution.mutation_sigma"),
    ("hopper", {"learner.batch_size": 10, "learner.replay_capacity": 5}, "learner.batch_size must not exceed"),
])
def test_bad_settings_are_rejected_with_the_field_named(task, overrides, fragment):
    with pytest.raises(ConfigError) as error:
        load_config(task, overrides)
    assert fragment in str(error.value)


def test_malformed_section_is_rejected():
    with pytest.raises(ConfigError, match=r"\[learner\] must be a table"):
        from_dict({"learner": 3})


def test_validate_accepts_every_default():
    for task in TASKS:
        validate(override(load_config(task), "learner.algorithm", "td3"))


def test_memory_estimate_by_hand():
    config = load_config("halfcheetah")
    estimate = memory_estimate(config, 17, 6)
    item = 4 * (17 + 6 + 17 + 3)
    assert estimate["replay_buffer"] == 1_000_000 * item
    assert estimate["genetic_memories"] == 11 * 8000 * item
    assert estimate["population"] == 10 * 4 * 20102
    assert estimate["learner"] == 4 * 4 * (20102 + 126201)
    td3 = memory_estimate(override(config, "learner.algorithm", "td3"), 17, 6)
    assert td3["learner"] == 4 * 4 * (20102 + 2 * 126201)


def test_cli_reports_config_errors_and_exits_2(capsys):
    assert main(["memory", "--env", "hopper", "--set", "evolution.pop_size=0"]) == 2
    assert "evolution.pop_size" in capsys.readouterr().err
    assert main(["memory", "--env", "hopper", "--set", "nonsense"]) == 2
    assert "section.field=value" in capsys.readouterr().err
    assert main(["memory", "--env", "hopper", "--obs-dim", "11", "--action-dim", "3"]) == 0
    assert "memory estimate" in capsys.readouterr().out
