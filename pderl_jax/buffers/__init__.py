"""Fixed-shape transition buffers: the shared replay buffer and the stacked genetic memories."""

from __future__ import annotations

from pderl_jax.buffers.genetic_memory import crossover_memory, memories_add, memories_init
from pderl_jax.buffers.ring import (RingBuffer, Transition, ring_add, ring_check_finite, ring_clone, ring_from_items,
                                    ring_init, ring_latest, ring_sample)
from pderl_jax.buffers.sampling import sample_distinct

__all__ = [
    "RingBuffer", "Transition", "ring_init", "ring_add", "ring_latest", "ring_clone", "ring_from_items",
    "ring_sample", "ring_check_finite", "sample_distinct", "memories_init", "memories_add",
    "crossover_memory",
]
