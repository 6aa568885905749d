"""The population snapshot a run leaves behind: members, genetic memories and the learner's networks.

It is what `pderl-jax analyze` reads. Written atomically (temporary file, then rename), so an
interrupted write never leaves a truncated snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from flax import serialization

from pderl_jax.config import ConfigError

SNAPSHOT_NAME = "population.msgpack"


def snapshot_of(state) -> dict:
    return {"population": state.population, "memories": state.memories, "rl_actor": state.learner.actor,
            "critic": state.learner.critic, "generation": state.generation, "frames": state.frames}


def save_snapshot(state, out_dir: Path) -> Path:
    path = Path(out_dir) / SNAPSHOT_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(serialization.to_bytes(jax.device_get(snapshot_of(state))))
    os.replace(tmp, path)
    return path


def load_snapshot(trainer, out_dir: Path) -> dict:
    """The snapshot in `out_dir`, restored into the shapes `trainer` expects."""
    path = Path(out_dir) / SNAPSHOT_NAME
    if not path.exists():
        raise ConfigError(f"{path} not found: train with an evolutionary mode first (the run writes it at the end)")
    template = snapshot_of(jax.eval_shape(trainer.init, jax.random.key(0)))
    template = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), template)
    try:
        return serialization.from_bytes(template, path.read_bytes())
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path} does not match this configuration ({error}); analyse it with the config.json "
                         "written beside it") from error
