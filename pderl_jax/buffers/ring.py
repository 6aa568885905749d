"""FIFO ring buffers of transitions as fixed-shape pytrees.

One `RingBuffer` serves as the shared replay buffer (capacity 1e6) and, stacked on a leading
member axis, as the population's genetic memories (capacity 8000 each). Semantics follow the
official `ReplayMemory`: append in order, overwrite the oldest entry when full, `latest(n)` in
chronological order, `clone` = copy of the master's latest `capacity` entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.buffers.sampling import sample_distinct


@struct.dataclass
class Transition:
    """One environment step as stored by the official code, plus a `truncated` flag.

    `done` is the official terminal flag (1.0 for termination *and* time-limit truncation);
    `truncated` marks the time-limit case so that it can optionally be bootstrapped.
    """

    state: jax.Array
    action: jax.Array
    next_state: jax.Array
    reward: jax.Array
    done: jax.Array
    truncated: jax.Array

    @classmethod
    def zeros(cls, shape: tuple[int, ...], obs_dim: int, action_dim: int) -> "Transition":
        sizes = dict(state=(obs_dim,), action=(action_dim,), next_state=(obs_dim,), reward=(), done=(), truncated=())
        return cls(**{name: jnp.zeros((*shape, *size), jnp.float32) for name, size in sizes.items()})

    @staticmethod
    def bytes_per_item(obs_dim: int, action_dim: int) -> int:
        return 4 * (2 * obs_dim + action_dim + 3)


@struct.dataclass
class RingBuffer:
    """`data` leaves have shape [capacity, ...]; `position` is the next write slot."""

    data: Transition
    position: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[-1]


def ring_init(capacity: int, obs_dim: int, action_dim: int) -> RingBuffer:
    if capacity <= 0:
        raise ValueError(f"buffer capacity must be positive, got {capacity}")
    return RingBuffer(
        data=Transition.zeros((capacity,), obs_dim, action_dim),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def ring_add(buffer: RingBuffer, items: Transition, valid: jax.Array | None = None) -> RingBuffer:
    """Append `items` (leading axis = time order) where `valid`; masked items are skipped.

    Equivalent to calling the official `add` once per valid item in order: if more valid items
    than the capacity arrive, only the newest `capacity` of them remain.
    """
    count = items.reward.shape[0]
    capacity = buffer.capacity
    if valid is None:
        valid = jnp.ones((count,), bool)
    rank = jnp.cumsum(valid) - 1  # order among the valid items
    num_valid = rank[-1] + 1 if count else jnp.zeros((), jnp.int32)
    keep = valid & (rank >= num_valid - capacity)
    slots = jnp.where(keep, (buffer.position + rank) % capacity, capacity)  # capacity -> dropped
    data = jax.tree.map(lambda d, x: d.at[slots].set(x, mode="drop"), buffer.data, items)
    return RingBuffer(
        data=data,
        position=((buffer.position + num_valid) % capacity).astype(jnp.int32),
        size=jnp.minimum(buffer.size + num_valid, capacity).astype(jnp.int32),
    )


def ring_latest(buffer: RingBuffer, n: int) -> tuple[Transition, jax.Array]:
    """The newest min(n, size) items, oldest first, left-aligned in an [n]-array; plus the count."""
    count = jnp.minimum(n, buffer.size)
    j = jnp.arange(n)
    slots = (buffer.position - count + j) % buffer.capacity
    items = jax.tree.map(lambda d: d[slots], buffer.data)
    valid = j < count
    items = jax.tree.map(lambda x: jnp.where(expand_mask(valid, x), x, 0), items)
    return items, count


def ring_from_items(items: Transition, count: jax.Array, capacity: int) -> RingBuffer:
    """A fresh buffer holding the first `count` of `items` in order (as `reset` + `add`s)."""
    n = items.reward.shape[0]
    assert n <= capacity, (n, capacity)
    count = jnp.asarray(count, jnp.int32)
    pad = capacity - n
    data = jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)), items)
    valid = jnp.arange(capacity) < count
    data = jax.tree.map(lambda x: jnp.where(expand_mask(valid, x), x, 0), data)
    return RingBuffer(
        data=data,
        position=(count % capacity).astype(jnp.int32),
        size=count.astype(jnp.int32),
    )


def ring_clone(master: RingBuffer) -> RingBuffer:
    """Official `clone`: the replacee is reset, then gets `master.get_latest(capacity)`."""
    items, count = ring_latest(master, master.capacity)
    return ring_from_items(items, count, master.capacity)


def ring_sample(buffer: RingBuffer, key: jax.Array, batch_size: int) -> tuple[Transition, jax.Array]:
    """`batch_size` items drawn uniformly without replacement; mask marks real ones (size < batch)."""
    slots, valid = sample_distinct(key, buffer.size, batch_size)
    return jax.tree.map(lambda d: d[slots], buffer.data), valid


def ring_check_finite(buffer: RingBuffer) -> jax.Array:
    """True when every stored item is finite (masked slots are zero and pass)."""
    leaves = jax.tree.leaves(buffer.data)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def expand_mask(mask, x):
    """Reshape `mask` to broadcast against `x` along x's trailing axes."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
