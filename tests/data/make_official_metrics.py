"""Writes official_metrics.json: four generations of PDERL and of TD3 on the counter task with the
official learner settings, as the code before learner presets computed them.

`test_presets.py` checks that the official preset still gives these numbers (the official runs'
CSVs unchanged). The numbers depend on XLA's rounding, so they are recorded under the test
suite's XLA flags (tests/conftest.py) with the jaxlib version beside them. Run from the
repository root of the revision to record:
    XLA_FLAGS="--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false" \
        PYTHONPATH=.:tests python tests/data/make_official_metrics.py OUT.json
"""

import dataclasses
import json
import sys

import jax
import jaxlib
import numpy as np

from pderl_jax.config import Config, load_config
from pderl_jax.training import Trainer
from toy_envs import CounterEnv

SMALL = {"evolution.pop_size": 4, "evolution.elite_fraction": 0.25, "evolution.num_evals": 2,
         "evolution.sync_period": 2, "evolution.genetic_memory_capacity": 64, "evolution.distill_batch_size": 8,
         "evolution.distill_epochs": 1, "evolution.proximal_batch_size": 16, "learner.replay_capacity": 4096,
         "learner.batch_size": 16, "learner.learning_starts": 32, "network.actor_hidden": "16,16",
         "network.critic_input_width": 8, "network.critic_hidden_width": 8}
COLUMNS = ("frames", "fitness", "champion_test", "rl_test", "critic_loss", "actor_loss", "elite_rate",
           "selected_rate", "discarded_rate")
GENERATIONS = 4
SEED = 11


def official_metrics(mode: str, generations: int = GENERATIONS) -> dict[str, list]:
    """Per generation, the metrics of `mode` with the official learner settings."""
    settings = {**SMALL, "mode": mode, "learner.algorithm": "td3" if mode == "td3" else "ddpg"}
    if "preset" in {f.name for f in dataclasses.fields(Config)}:
        settings["preset"] = "official"
    trainer = Trainer(load_config("hopper", settings), CounterEnv())
    generation = jax.jit(trainer.generation)
    state = trainer.init(jax.random.key(SEED))
    rows = {name: [] for name in COLUMNS}
    for _ in range(generations):
        state, metrics = generation(state)
        for name in COLUMNS:
            rows[name].append(np.asarray(getattr(metrics, name)).tolist())
    return rows


if __name__ == "__main__":
    import os

    record = {mode: official_metrics(mode) for mode in ("pderl", "td3")}
    record["recorded_with"] = {"jaxlib": jaxlib.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    with open(sys.argv[1], "w") as f:
        json.dump(record, f, indent=1)
