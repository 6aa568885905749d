"""One evolution step of the population (official `SSNE.epoch`), pure and jit-able.

    plan       = select(fitness)                 # rank, tournament, unselected, elite slots
    population = clone elites into their slots   # parameters and genetic memories
    population = refill the unselected slots     # distillation children | n-point pairs
    population = mutate all but the clones       # proximal | Gaussian, each w.p. mutation_prob

The number of children and mutations is static; masks decide which are used.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.config import Config, EvolutionConfig
from pderl_jax.networks import ActorApply, QFunction
from pderl_jax.operators.distillation import DistillationInfo, distill_children
from pderl_jax.operators.mutation import gaussian_mutation, proximal_mutation
from pderl_jax.operators.npoint import npoint_crossover
from pderl_jax.operators.population import Population, clone_elites, inherited
from pderl_jax.operators.selection import (SelectionPlan, all_pairs, assign_parents, candidate_parents,
                                          pair_distances, pair_scores, pairing_fitness, plan_selection)


@struct.dataclass
class EvolutionInfo:
    plan: SelectionPlan
    child_slots: jax.Array  # [C] slots refilled by crossover (padding = pop_size)
    parents: jax.Array  # [C, 2] parent slots of each child
    mutated: jax.Array  # [k] bool
    distillation: DistillationInfo | None


def evolve(key: jax.Array, population: Population, fitness: jax.Array, apply_actor: ActorApply, q_fn: QFunction,
           config: Config, rl_slot: jax.Array | int = -1) -> tuple[Population, EvolutionInfo]:
    """Selection, elitism, crossover and mutation for one generation, with the operators of `config.mode`.

    `rl_slot` is the slot the RL actor was synced into last generation (-1 if none), for the
    paper's Table 2 statistics in `info.plan.rl_outcome`.
    """
    evo = config.evolution
    k = population.size
    chex.assert_shape(fitness, (k,))
    chex.assert_tree_shape_prefix(population, (k,))
    select_key, cross_key, mutate_key = jax.random.split(key, 3)
    plan = plan_selection(select_key, fitness, evo.num_elites, evo.tournament_size, rl_slot)

    population = clone_elites(population, plan.elites, plan.elite_slots)

    if config.crossover == "distillation":
        population, child_slots, parents, distill_info = _distillation_step(
            cross_key, population, fitness, plan, apply_actor, q_fn, evo)
    else:
        population, child_slots, parents = _npoint_step(cross_key, population, plan)
        distill_info = None

    is_clone = jnp.any(jnp.arange(k)[:, None] == plan.elite_slots[None, :], axis=1)
    gate_key, op_key = jax.random.split(mutate_key)
    mutated = ~is_clone & (jax.random.uniform(gate_key, (k,)) < evo.mutation_prob)
    population = mutate_population(op_key, population, mutated, apply_actor, evo, config.mutation)
    return population, EvolutionInfo(plan=plan, child_slots=child_slots, parents=parents, mutated=mutated,
                                     distillation=distill_info)


def _distillation_step(key, population, fitness, plan, apply_actor, q_fn, config):
    k = population.size
    num_children = k - config.num_elites
    slots, count = candidate_parents(plan)
    order_fitness = pairing_fitness(fitness, plan, config.fix_elite_fitness)
    distance_key, child_key = jax.random.split(key)
    distances = None
    if config.pairing != "fitness":
        distances = pair_distances(distance_key, population, slots, apply_actor, config.distance_batch_size,
                                   config.distance_window, config.distance_metric)
        _, second = all_pairs(slots.shape[0])
        distances = jnp.where(second < count, distances, -jnp.inf)
    scores = pair_scores(order_fitness, slots, distances, config.pairing, config.pairing_mix)
    parent1, parent2 = assign_parents(scores, order_fitness, slots, count, num_children, config.pairing)
    active = jnp.arange(num_children) < plan.unselected_count
    children, info = distill_children(child_key, population, parent1, parent2, active, apply_actor, q_fn, config)
    child_slots = jnp.where(active, plan.unselected[:num_children], k)
    return population.put(child_slots, children), child_slots, jnp.stack([parent1, parent2], axis=1), info


def _npoint_step(key, population, plan):
    """ERL: pairs of unselected slots get (random elite clone, random offspring clone) crossed."""
    k = population.size
    num_pairs = (k + 1) // 2
    pad_key, elite_key, offspring_key, cross_key = jax.random.split(key, 4)
    slots, count = plan.unselected, plan.unselected_count
    slots = jnp.concatenate([slots, slots[:1]])
    duplicate = slots[jax.random.randint(pad_key, (), 0, jnp.maximum(count, 1))]
    odd = count % 2 == 1
    slots = slots.at[count].set(jnp.where(odd, duplicate, slots[count]))
    count = count + odd

    elite_masters = plan.elite_slots[jax.random.randint(elite_key, (num_pairs,), 0, plan.elite_slots.shape[0])]
    offspring_masters = plan.offspring[jax.random.randint(offspring_key, (num_pairs,), 0,
                                                          jnp.maximum(plan.offspring_count, 1))]
    first, second = inherited(population.take(elite_masters)), inherited(population.take(offspring_masters))
    child1, child2 = jax.vmap(npoint_crossover)(jax.random.split(cross_key, num_pairs), first.members,
                                                second.members)
    first, second = first.replace(members=child1), second.replace(members=child2)

    # Children in list order; a slot listed twice (the evening duplicate) keeps its last child.
    targets = jnp.stack([slots[0:2 * num_pairs:2], slots[1:2 * num_pairs:2]], axis=1).reshape(-1)
    position = jnp.arange(2 * num_pairs)
    used = position < count
    later_same = (targets[:, None] == targets[None, :]) & (position[None, :] > position[:, None]) & used[None, :]
    targets = jnp.where(used & ~jnp.any(later_same, axis=1), targets, k)
    interleaved = jax.tree.map(lambda x, y: jnp.stack([x, y], axis=1).reshape(-1, *x.shape[1:]), first, second)
    parents = jnp.stack([jnp.repeat(elite_masters, 2), jnp.repeat(offspring_masters, 2)], axis=1)
    return population.put(targets, interleaved), targets, parents


def mutate_population(key: jax.Array, population: Population, mask: jax.Array, apply_actor: ActorApply,
                      config: EvolutionConfig, mutation: str) -> Population:
    """Mutate the members where `mask` is True (vmapped); the others and all memories are unchanged."""
    chex.assert_shape(mask, (population.size,))
    keys = jax.random.split(key, mask.shape[0])
    members = population.members
    if mutation == "proximal":
        mutated = jax.vmap(lambda k, p, m: proximal_mutation(k, p, m, apply_actor, config))(
            keys, members, population.memories)
    else:
        mutated = jax.vmap(lambda k, p: gaussian_mutation(k, p, config))(keys, members)
    pick = lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return population.replace(members=jax.tree.map(pick, mutated, members))
