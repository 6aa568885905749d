"""Placing a leading axis (runs of a sweep, members of a population) across the local devices.

`jax.jit` with `NamedSharding` inputs partitions the program itself (no `pmap`): the vmapped
runs or members on each device are computed there, and the few operations that mix them
(selection, crossover parent gathers) become collectives. On one device this is a no-op.
Multi-host: call `jax.distributed.initialize()` first; `jax.devices()` then spans all hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def leading_axis_sharding(size: int, axis_name: str = "batch"):
    """A sharding of a leading axis of `size` over all devices, or None when it cannot divide evenly."""
    devices = jax.devices()
    if len(devices) < 2 or size % len(devices):
        return None
    return NamedSharding(Mesh(np.asarray(devices), (axis_name,)), PartitionSpec(axis_name))


def shard_leading_axis(tree, size: int, axis_name: str = "batch"):
    """`tree` (every leaf with leading axis `size`) sharded over the devices; returns (tree, description)."""
    devices = jax.devices()
    sharding = leading_axis_sharding(size, axis_name)
    if sharding is None:
        reason = "" if len(devices) == 1 else f" ({size} does not divide over {len(devices)} devices)"
        return tree, f"on 1 {devices[0].platform} device{reason}"
    return jax.device_put(tree, sharding), f"sharded over {len(devices)} {devices[0].platform} devices"


def shard_population(state, pop_size: int):
    """A TrainState with the population and its memories sharded over the devices, the rest replicated."""
    sharding = leading_axis_sharding(pop_size, "members")
    if sharding is None or state.evolution is None:
        return state, f"on 1 {jax.devices()[0].platform} device" if len(jax.devices()) == 1 else \
            f"replicated ({pop_size} members do not divide over {len(jax.devices())} devices)"
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    state = jax.device_put(state, replicated)
    population = jax.device_put(state.evolution.population, sharding)
    state = state.replace(evolution=state.evolution.replace(population=population))
    return state, f"population sharded over {len(jax.devices())} {jax.devices()[0].platform} devices"
