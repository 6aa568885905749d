"""Placing a leading axis (runs of a sweep, members of a population) across the devices.

`jax.jit` with `NamedSharding` inputs and outputs partitions the program itself (no `pmap`): the
vmapped runs or members on each device are computed there, and the few operations that mix them
(selection, crossover parent gathers) become collectives. On one device this is a no-op. With
several processes (`distributed.start`), `jax.devices()` spans all of them: states are built by a
program whose outputs already carry the sharding, so each process computes only its own share, and
values every process holds alike (hyperparameters) become global arrays through
`jax.make_array_from_callback`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pderl_jax.config import ConfigError


def _where() -> str:
    devices = jax.devices()
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{len(devices)} {devices[0].platform} device{'s' if len(devices) > 1 else ''}{processes}"


def leading_axis_sharding(size: int, axis_name: str = "batch"):
    """A sharding of a leading axis of `size` over all devices, or None (one device, or `size` does not
    divide over them). Several processes must share the work, so there an uneven size is refused."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    if size % len(devices):
        if jax.process_count() > 1:
            raise ConfigError(f"{size} {axis_name} do not divide over the {_where()}: use a multiple of "
                              f"{len(devices)} (--seeds, or --set evolution.pop_size=...)")
        return None
    return NamedSharding(Mesh(np.asarray(devices), (axis_name,)), PartitionSpec(axis_name))


def replicated_sharding() -> NamedSharding:
    """Every device holds the whole value."""
    return NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), PartitionSpec())


def placement(sharding, size: int) -> str:
    """How a leading axis of `size` is placed, in words."""
    if sharding is not None:
        return f"sharded over {_where()}"
    devices = jax.devices()
    reason = "" if len(devices) == 1 else f" ({size} does not divide over {len(devices)} devices)"
    return f"on 1 {devices[0].platform} device{reason}"


def place(tree, sharding):
    """Host values that every process holds alike, as global arrays with `sharding` (None: as they are)."""
    if sharding is None:
        return tree

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(one, tree)


def population_shardings(like, pop_size: int):
    """Shardings for a TrainState shaped like `like`: the population (members and genetic memories) split
    over the devices, everything else replicated; None where nothing needs placing. Also the placement
    in words."""
    sharding = leading_axis_sharding(pop_size, "members")
    if sharding is None or like.evolution is None:
        if jax.process_count() > 1:  # no population axis: every process computes the same values
            return jax.tree.map(lambda _: replicated_sharding(), like), f"replicated over {_where()}"
        if len(jax.devices()) == 1:
            return None, placement(None, pop_size)
        return None, f"on 1 device ({pop_size} members do not divide over {len(jax.devices())} devices)"
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    tree = jax.tree.map(lambda _: replicated, like)
    population = jax.tree.map(lambda _: sharding, like.evolution.population)
    tree = tree.replace(evolution=tree.evolution.replace(population=population))
    return tree, f"population sharded over {_where()}"


__all__ = ["leading_axis_sharding", "replicated_sharding", "placement", "place", "population_shardings"]
