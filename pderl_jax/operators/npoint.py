"""ERL's row-wise n-point crossover (`crossover_inplace`), producing two children.

For every parameter tensor pair the original copies, n times in sequence, one random "row"
from one parent to the other (direction by a coin flip). A torch weight row holds the
incoming weights of one output neuron, which is a *column* of a flax kernel; biases and
LayerNorm gamma/beta exchange single elements. n ~ U{0..2*rows-1} for matrices and
U{0..len-1} for vectors.

The sequence is evaluated exactly without a loop: after the first copy that touches a row,
both parents hold the same row, so later copies of that row change nothing. Each row of both
children therefore equals the source of the *first* event that hit it, or stays as it was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def npoint_crossover(key: jax.Array, gene1: dict, gene2: dict) -> tuple[dict, dict]:
    """Both children of ERL's in-place crossover of `gene1` and `gene2`."""
    leaves1, treedef = jax.tree.flatten(gene1)
    leaves2 = treedef.flatten_up_to(gene2)
    keys = jax.random.split(key, len(leaves1))
    pairs = [_cross_tensor(k, a, b) for k, a, b in zip(keys, leaves1, leaves2)]
    return (jax.tree.unflatten(treedef, [p[0] for p in pairs]),
            jax.tree.unflatten(treedef, [p[1] for p in pairs]))


def first_copy_sources(key: jax.Array, num_rows: int, max_events: int) -> tuple[jax.Array, jax.Array]:
    """For each row: whether any copy event hit it, and whether the first one copied 2 -> 1.

    Simulates n ~ U{0..max_events-1} events, each picking a uniform row and a direction.
    """
    count_key, row_key, dir_key = jax.random.split(key, 3)
    count = jax.random.randint(count_key, (), 0, max_events)
    rows = jax.random.randint(row_key, (max_events,), 0, num_rows)
    into_first = jax.random.uniform(dir_key, (max_events,)) < 0.5  # official: W1[r] = W2[r]
    happened = jnp.arange(max_events) < count
    hits = (rows[:, None] == jnp.arange(num_rows)[None, :]) & happened[:, None]  # [events, rows]
    touched = jnp.any(hits, axis=0)
    first = jnp.argmax(hits, axis=0)  # index of the first event per row (0 if none)
    return touched, into_first[first]


def _cross_tensor(key, a, b):
    if a.ndim == 2:  # flax kernel [in, out]: a torch row is a kernel column
        num_rows = a.shape[1]
        touched, from_second = first_copy_sources(key, num_rows, 2 * num_rows)
        touched, from_second = touched[None, :], from_second[None, :]
    else:
        num_rows = a.shape[0]
        touched, from_second = first_copy_sources(key, num_rows, max(num_rows, 1))
    source = jnp.where(from_second, b, a)
    return jnp.where(touched, source, a), jnp.where(touched, source, b)
