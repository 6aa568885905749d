"""The README's main job (component demo) runs end to end for PDERL and ERL."""

import math

import pytest

from pderl_jax.config import load_config
from pderl_jax.demo import run_demo

SMALL = {"evolution.pop_size": 4, "evolution.genetic_memory_capacity": 256, "learner.replay_capacity": 5000,
         "evolution.sync_period": 1}


@pytest.mark.parametrize("mode,learner", [("pderl", "ddpg"), pytest.param("erl", "td3", marks=pytest.mark.slow)])
def test_demo_runs_and_reports_finite_statistics(mode, learner):
    config = load_config("halfcheetah", {**SMALL, "mode": mode, "learner.algorithm": learner})
    lines = []
    history = run_demo(config, generations=2, print_fn=lines.append)
    assert len(history) == 2
    assert lines[0].startswith("memory estimate")
    for stats in history:
        for name in ("best", "mean", "rl"):
            assert math.isfinite(stats[name]), (name, stats)
        assert stats["best"] >= stats["mean"]
    # 4 members x 100 + 100 RL transitions = 500 <= 640: the learner waits, then trains.
    assert math.isnan(history[0]["critic_loss"]) and math.isfinite(history[1]["critic_loss"])
    # The RL actor was synced in generation 1, so generation 2 classifies it (Table 2 statistics).
    assert history[0]["rl_outcome"] == 0 and history[1]["rl_outcome"] in (1, 2, 3)
