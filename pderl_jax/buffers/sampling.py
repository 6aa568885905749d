"""Uniform sampling of k distinct indices from range(n) with fixed shapes.

The official code draws every batch with `random.sample`, i.e. without replacement within a batch.
`jax.random.choice(replace=False)` permutes all n candidates, which is far too slow for a 1e6
replay buffer, so distinct indices are drawn by rejection: draw with replacement, keep the first
occurrence of each value, redraw the rest. Values accepted in earlier rounds always win, which
makes this the sequential "redraw on collision" scheme and hence exactly uniform over k-subsets.
When n is at most a few times k, rejection needs many rounds, so a random permutation of
range(n) (over a static pool of 4k slots) is cut to its first k entries instead; when n < k
every index in range(n) is returned (in random order) and the tail is masked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def sample_distinct(key: jax.Array, n: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Draw min(n, k) distinct indices uniformly from range(n).

    Returns `(indices[k], valid[k])`: `valid[j]` is True for the first min(n, k) slots; invalid
    slots hold index 0 so that gathers stay in bounds. `n` may be traced; `k` is static.
    """
    n = jnp.asarray(n, jnp.int32)
    perm_key, rejection_key = jax.random.split(key)
    pool = PERMUTATION_POOL * k
    indices = lax.cond(
        n > pool,
        lambda: _rejection_sample(rejection_key, n, k),
        lambda: _masked_permutation(perm_key, n, pool)[:k],
    )
    valid = jnp.arange(k) < jnp.minimum(n, k)
    return jnp.where(valid, indices, 0), valid


PERMUTATION_POOL = 4  # n <= 4k: permute range(n) instead of rejecting collisions


def _masked_permutation(key, n, k):
    """First min(n, k) slots: a uniformly random arrangement of range(n) cut to k entries."""
    scores = jax.random.uniform(key, (k,))
    scores = jnp.where(jnp.arange(k) < n, scores, 2.0)
    return jnp.argsort(scores).astype(jnp.int32)


def _rejection_sample(key, n, k):
    positions = jnp.arange(k)

    def duplicates(indices, accepted):
        # Slot i loses to slot j holding the same value if j was accepted in an earlier round,
        # or both are new and j comes first: sort by (value, priority), flag repeats.
        priority = positions + k * (~accepted)
        order = jnp.lexsort((priority, indices))
        sorted_values = indices[order]
        repeat = jnp.concatenate([jnp.zeros((1,), bool), sorted_values[1:] == sorted_values[:-1]])
        return jnp.zeros((k,), bool).at[order].set(repeat)

    def body(carry):
        key, indices, accepted = carry
        key, draw_key = jax.random.split(key)
        fresh = jax.random.randint(draw_key, (k,), 0, jnp.maximum(n, 1), dtype=jnp.int32)
        indices = jnp.where(accepted, indices, fresh)
        # With n <= 4k this branch is discarded (see `sample_distinct`), but under vmap both
        # branches run: stop at once instead of looping for long (or forever when n < k).
        accepted = ~duplicates(indices, accepted) | (n <= PERMUTATION_POOL * k)
        return key, indices, accepted

    def cond(carry):
        return ~jnp.all(carry[2])

    init = (key, jnp.zeros((k,), jnp.int32), jnp.zeros((k,), bool))
    _, indices, _ = lax.while_loop(cond, body, body(init))
    return indices
