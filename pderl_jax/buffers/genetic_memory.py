"""Genetic memories: one small FIFO buffer per population member, stacked on a member axis.

Inheritance follows the official code: a mutated member keeps its memory, an elite clone or a
synced RL actor gets a chronological copy of its master's memory (`ring_clone`), and a
distillation child gets the latest capacity/2 transitions of each parent, shuffled.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from pderl_jax.buffers.ring import (
    RingBuffer,
    Transition,
    expand_mask,
    ring_add,
    ring_from_items,
    ring_init,
    ring_latest,
)


def memories_init(num_members: int, capacity: int, obs_dim: int, action_dim: int) -> RingBuffer:
    """`num_members` empty memories stacked on axis 0."""
    single = ring_init(capacity, obs_dim, action_dim)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_members, *x.shape)), single)


def memories_add(memories: RingBuffer, items: Transition, valid: jax.Array) -> RingBuffer:
    """Append per-member item sequences `items[k, T, ...]` (masked by `valid[k, T]`)."""
    chex.assert_tree_shape_prefix(items, valid.shape)
    chex.assert_equal_shape_prefix([memories.size, valid], 1)
    return jax.vmap(ring_add)(memories, items, valid)


def crossover_memory(key: jax.Array, parent1: RingBuffer, parent2: RingBuffer, shuffle: bool = True) -> RingBuffer:
    """Child memory: latest capacity//2 of parent 1, then of parent 2, then shuffled in place.

    With `shuffle=True` (official) the inherited part loses its chronological order, so later
    FIFO evictions hit random inherited transitions; `shuffle=False` keeps the order.
    """
    capacity = parent1.capacity
    half = capacity // 2
    items1, count1 = ring_latest(parent1, half)
    items2, count2 = ring_latest(parent2, half)
    count = count1 + count2
    j = jnp.arange(capacity)
    from_first = j < count1
    slot1 = jnp.clip(j, 0, half - 1)
    slot2 = jnp.clip(j - count1, 0, half - 1)
    merged = jax.tree.map(
        lambda a, b: jnp.where(expand_mask(from_first, a[slot1]), a[slot1], b[slot2]), items1, items2
    )
    if shuffle:
        scores = jnp.where(j < count, jax.random.uniform(key, (capacity,)), 2.0)
        order = jnp.argsort(scores)
        merged = jax.tree.map(lambda x: x[order], merged)
    return ring_from_items(merged, count, capacity)

