"""A population as one value: the k members' actor parameters and their genetic memories.

Every operator moves a member's parameters and its memory together, so they travel as one
pytree with a leading member axis. `take` with an integer gives one member (same fields,
no member axis); with an index array, a stacked sub-population.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from pderl_jax.buffers.genetic_memory import memories_init
from pderl_jax.buffers.ring import RingBuffer, ring_clone


@struct.dataclass
class Population:
    members: dict  # actor parameters stacked on axis 0: [k, ...]
    memories: RingBuffer  # genetic memories [k, kappa, ...]

    @property
    def size(self) -> int:
        return self.memories.size.shape[0]

    def take(self, slots) -> Population:
        return jax.tree.map(lambda x: x[slots], self)

    def put(self, slots, new: Population) -> Population:
        """`new` written into `slots`; a slot equal to the population size is dropped (padding)."""
        return jax.tree.map(lambda xs, x: xs.at[slots].set(x, mode="drop"), self, new)


def init_members(members: dict, capacity: int, obs_dim: int, action_dim: int) -> Population:
    """Stacked actor parameters, each with an empty genetic memory."""
    k = jax.tree.leaves(members)[0].shape[0]
    return Population(members=members, memories=memories_init(k, capacity, obs_dim, action_dim))


def inherited(members: Population) -> Population:
    """Official `clone` of stacked members: the same parameters, a chronological copy of each memory."""
    return members.replace(memories=jax.vmap(ring_clone)(members.memories))


def clone_elites(population: Population, sources: jax.Array, targets: jax.Array) -> Population:
    """Official `clone` (source -> target) for every pair in order, as one gather and one scatter.

    A later elite may be copied from a slot an earlier clone overwrote; following each slot's
    origin through the E copies (a scan over E integers) reproduces the sequential result
    exactly, and a target written twice receives the same member both times.
    """
    step = lambda origin, pair: (origin.at[pair[1]].set(origin[pair[0]]), None)
    origin, _ = lax.scan(step, jnp.arange(population.size), (sources, targets))
    return population.put(targets, inherited(population.take(origin[targets])))


def sync_rl_actor(population: Population, rl_actor: dict, rl_memory: RingBuffer, slot) -> Population:
    """Copy the RL actor and a chronological copy of its genetic memory into `slot`."""
    return population.put(slot, Population(members=rl_actor, memories=ring_clone(rl_memory)))
