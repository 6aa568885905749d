"""One evolution step of the population (official `SSNE.epoch`), pure and jit-able.

    plan    = select(fitness)                   # rank, tournament, unselected, elite slots
    pop     = clone elites into their slots     # params and genetic memories
    pop     = refill unselected slots           # distillation children | n-point pairs
    pop     = mutate everyone but the clones    # proximal | Gaussian, each w.p. mutation_prob

The number of children and mutations is static; masks decide which are used.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax import lax
from flax import struct

from pderl_jax.buffers.genetic_memory import take_member
from pderl_jax.buffers.ring import RingBuffer, ring_clone
from pderl_jax.config import EvolutionConfig
from pderl_jax.networks import ActorApply, QFunction
from pderl_jax.operators.distillation import DistillationInfo, distill_children
from pderl_jax.operators.mutation import gaussian_mutation, proximal_mutation
from pderl_jax.operators.npoint import npoint_crossover
from pderl_jax.operators.selection import (
    SelectionPlan,
    all_pairs,
    assign_parents,
    candidate_parents,
    pair_distances,
    pair_scores,
    pairing_fitness,
    plan_selection,
)


@struct.dataclass
class EvolutionInfo:
    plan: SelectionPlan
    child_slots: jax.Array  # [C] slots refilled by crossover (padding = pop_size)
    parents: jax.Array  # [C, 2] parent slots of each child
    mutated: jax.Array  # [k] bool
    distillation: DistillationInfo | None


def clone_elites(population: dict, memories: RingBuffer, sources: jax.Array, targets: jax.Array):
    """Official `clone` (params and a chronological copy of the memory, source -> target) for every
    (source, target) pair in order, as one gather and one scatter.

    A later elite may be copied from a slot an earlier clone overwrote; following each slot's
    origin through the E copies (a scan over E integers) reproduces the sequential result
    exactly, and a target written twice receives the same member both times.
    """
    k = jax.tree.leaves(population)[0].shape[0]
    origin, _ = lax.scan(lambda o, st: (o.at[st[1]].set(o[st[0]]), None), jnp.arange(k), (sources, targets))
    final_sources = origin[targets]
    population = jax.tree.map(lambda x: x.at[targets].set(x[final_sources]), population)
    clones = jax.vmap(lambda i: ring_clone(take_member(memories, i)))(final_sources)
    memories = jax.tree.map(lambda xs, x: xs.at[targets].set(x), memories, clones)
    return population, memories


def sync_rl_actor(population: dict, memories: RingBuffer, rl_actor: dict, rl_memory: RingBuffer,
                  slot) -> tuple[dict, RingBuffer]:
    """Copy the RL actor (all params) and a chronological copy of its genetic memory into `slot`."""
    population = jax.tree.map(lambda xs, x: xs.at[slot].set(x), population, rl_actor)
    memories = jax.tree.map(lambda xs, x: xs.at[slot].set(x), memories, ring_clone(rl_memory))
    return population, memories


def scatter_members(population: dict, memories: RingBuffer, slots: jax.Array, new_params: dict,
                    new_memories: RingBuffer) -> tuple[dict, RingBuffer]:
    """Write members into `slots`; a slot equal to the population size is dropped (padding)."""
    put = lambda xs, x: xs.at[slots].set(x, mode="drop")
    return jax.tree.map(put, population, new_params), jax.tree.map(put, memories, new_memories)


def evolve(key: jax.Array, population: dict, memories: RingBuffer, fitness: jax.Array,
           apply_actor: ActorApply, q_fn: QFunction, config: EvolutionConfig, crossover: str, mutation: str,
           rl_slot: jax.Array | int = -1) -> tuple[dict, RingBuffer, EvolutionInfo]:
    """Selection, elitism, crossover and mutation for one generation.

    `crossover` is "distillation" or "npoint", `mutation` "proximal" or "gaussian";
    `rl_slot` is the slot the RL actor was synced into last generation (-1 if none), for the
    paper's Table 2 statistics in `info.plan.rl_outcome`.
    """
    k = fitness.shape[0]
    chex.assert_shape(fitness, (k,))
    chex.assert_tree_shape_prefix(population, (k,))
    chex.assert_tree_shape_prefix(memories, (k,))
    select_key, cross_key, mutate_key = jax.random.split(key, 3)
    plan = plan_selection(select_key, fitness, config.num_elites, config.tournament_size, rl_slot)

    population, memories = clone_elites(population, memories, plan.elites, plan.elite_slots)

    if crossover == "distillation":
        population, memories, child_slots, parents, distill_info = _distillation_step(
            cross_key, population, memories, fitness, plan, apply_actor, q_fn, config)
    else:
        population, memories, child_slots, parents = _npoint_step(cross_key, population, memories, plan)
        distill_info = None

    is_clone = jnp.any(jnp.arange(k)[:, None] == plan.elite_slots[None, :], axis=1)
    gate_key, op_key = jax.random.split(mutate_key)
    mutated = ~is_clone & (jax.random.uniform(gate_key, (k,)) < config.mutation_prob)
    population = mutate_population(op_key, population, memories, mutated, apply_actor, config, mutation)
    return population, memories, EvolutionInfo(plan=plan, child_slots=child_slots, parents=parents,
                                               mutated=mutated, distillation=distill_info)


def _distillation_step(key, population, memories, fitness, plan, apply_actor, q_fn, config):
    k = fitness.shape[0]
    num_children = k - config.num_elites
    slots, count = candidate_parents(plan)
    order_fitness = pairing_fitness(fitness, plan, config.fix_elite_fitness)
    distance_key, child_key = jax.random.split(key)
    distances = None
    if config.pairing != "fitness":
        distances = pair_distances(distance_key, population, memories, slots, apply_actor,
                                   config.distance_batch_size, config.distance_window, config.distance_metric)
        first, second = all_pairs(slots.shape[0])
        distances = jnp.where(second < count, distances, -jnp.inf)
    scores = pair_scores(order_fitness, slots, distances, config.pairing, config.pairing_mix)
    parent1, parent2 = assign_parents(scores, order_fitness, slots, count, num_children, config.pairing)
    active = jnp.arange(num_children) < plan.unselected_count
    children, child_memories, info = distill_children(child_key, population, memories, parent1, parent2, active,
                                                      apply_actor, q_fn, config)
    child_slots = jnp.where(active, plan.unselected[:num_children], k)
    population, memories = scatter_members(population, memories, child_slots, children, child_memories)
    return population, memories, child_slots, jnp.stack([parent1, parent2], axis=1), info


def _npoint_step(key, population, memories, plan):
    """ERL: pairs of unselected slots get (random elite clone, random offspring clone) crossed."""
    k = plan.rank.shape[0]
    num_pairs = (k + 1) // 2
    pad_key, elite_key, offspring_key, cross_key = jax.random.split(key, 4)
    slots, count = plan.unselected, plan.unselected_count
    slots = jnp.concatenate([slots, slots[:1]])
    duplicate = slots[jax.random.randint(pad_key, (), 0, jnp.maximum(count, 1))]
    odd = count % 2 == 1
    slots = slots.at[count].set(jnp.where(odd, duplicate, slots[count]))
    count = count + odd

    pair_index = jnp.arange(num_pairs)
    elite_masters = plan.elite_slots[jax.random.randint(elite_key, (num_pairs,), 0, plan.elite_slots.shape[0])]
    offspring_masters = plan.offspring[jax.random.randint(offspring_key, (num_pairs,), 0,
                                                          jnp.maximum(plan.offspring_count, 1))]
    take = lambda tree, s: jax.tree.map(lambda x: x[s], tree)
    child1, child2 = jax.vmap(npoint_crossover)(jax.random.split(cross_key, num_pairs),
                                                take(population, elite_masters), take(population, offspring_masters))
    memory1 = jax.vmap(ring_clone)(take(memories, elite_masters))
    memory2 = jax.vmap(ring_clone)(take(memories, offspring_masters))

    # Children in list order; a slot listed twice (the evening duplicate) keeps its last child.
    targets = jnp.stack([slots[0:2 * num_pairs:2], slots[1:2 * num_pairs:2]], axis=1).reshape(-1)
    position = jnp.arange(2 * num_pairs)
    used = position < count
    later_same = (targets[:, None] == targets[None, :]) & (position[None, :] > position[:, None]) & used[None, :]
    final = used & ~jnp.any(later_same, axis=1)
    targets = jnp.where(final, targets, k)
    interleave = lambda a, b: jax.tree.map(lambda x, y: jnp.stack([x, y], axis=1).reshape(-1, *x.shape[1:]), a, b)
    population, memories = scatter_members(population, memories, targets, interleave(child1, child2),
                                           interleave(memory1, memory2))
    parents = jnp.stack([jnp.repeat(elite_masters, 2), jnp.repeat(offspring_masters, 2)], axis=1)
    return population, memories, targets, parents


def mutate_population(key: jax.Array, population: dict, memories: RingBuffer, mask: jax.Array,
                      apply_actor: ActorApply, config: EvolutionConfig, mutation: str) -> dict:
    """Mutate the members where `mask` is True (vmapped); the others are returned unchanged."""
    chex.assert_tree_shape_prefix(population, mask.shape)
    keys = jax.random.split(key, mask.shape[0])
    if mutation == "proximal":
        mutated = jax.vmap(lambda k, p, m: proximal_mutation(k, p, m, apply_actor, config))(keys, population, memories)
    else:
        mutated = jax.vmap(lambda k, p: gaussian_mutation(k, p, config))(keys, population)
    pick = lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return jax.tree.map(pick, mutated, population)
