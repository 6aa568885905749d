"""Offspring of each genetic operator from the same parents (paper Figures 5, 7 and 9).

Everything here runs extra episodes that are neither stored nor counted as frames: the study
reads a population, its genetic memories and the learner's critic, and changes none of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.envs.rollout import episode_major, rollout
from pderl_jax.operators.distillation import distill_child
from pderl_jax.operators.mutation import gaussian_mutation, proximal_mutation
from pderl_jax.operators.npoint import npoint_crossover
from pderl_jax.operators.population import Population


@struct.dataclass
class Behaviour:
    """Mean return and visited states (first two dimensions) of M actors over some episodes."""

    returns: jax.Array  # [M]
    states: jax.Array  # [M, episodes * T, 2]
    valid: jax.Array  # [M, episodes * T]


@struct.dataclass
class OperatorStudy:
    population: Behaviour  # [k]
    crossover_parents: jax.Array  # [draws, 2] member slots, parent 1 the fitter
    distilled: Behaviour  # [draws] Q-filtered distillation children
    npoint: Behaviour  # [draws] n-point crossover children
    mutation_parents: jax.Array  # [draws] member slots
    proximal: Behaviour  # [draws]
    gaussian: Behaviour  # [draws]
    sigma_parent: jax.Array  # slot of the member mutated at every magnitude (the fittest)
    sigmas: jax.Array  # [S] mutation magnitudes
    proximal_by_sigma: Behaviour  # [S] proximal mutation with sigma = sigmas[i]
    gaussian_by_sigma: Behaviour  # [S] Gaussian mutation with strength = sigmas[i]


def behaviour(trainer, key: jax.Array, actors: dict, episodes: int) -> Behaviour:
    """Deterministic episodes of each of the M stacked `actors`; nothing stored or counted.

    Episode e of every actor starts from the same initial state (drawn from `key`), so that
    differences between actors are differences of behaviour, not of starting states.
    """
    m = jax.tree.leaves(actors)[0].shape[0]
    params = jax.tree.map(lambda x: jnp.repeat(x, episodes, axis=0), actors)
    policy = lambda p, obs, *_: (jax.vmap(trainer.apply_actor)(p, obs), p)
    reset_keys = jax.random.split(key, episodes)[jnp.tile(jnp.arange(episodes), m)]
    result, _ = rollout(trainer.env, key, m * episodes, policy, params, reset_keys=reset_keys)
    items, valid = episode_major(result, m)
    return Behaviour(returns=result.episode_return.reshape(m, episodes).mean(axis=1),
                     states=items.state[..., :2], valid=valid)


def study_operators(trainer, key: jax.Array, population: Population, critic: dict, draws: int,
                    episodes: int, sigmas: jax.Array) -> OperatorStudy:
    """Children of every operator from the same randomly drawn parents, and their behaviour."""
    evo = trainer.config.evolution
    k = population.size
    episode_key, pair_key, cross_key, mutant_key, mutate_key, sigma_key = jax.random.split(key, 6)
    q_fn = lambda s, a: trainer.learner.q1(critic, s, a)

    evaluated = behaviour(trainer, episode_key, population.members, episodes)

    # Crossovers: ten (or `draws`) random pairs of distinct members, parent 1 the fitter.
    pairs = jax.vmap(lambda k_: jax.random.choice(k_, k, (2,), replace=False))(jax.random.split(pair_key, draws))
    fitter_first = evaluated.returns[pairs[:, 0]] >= evaluated.returns[pairs[:, 1]]
    pairs = jnp.where(fitter_first[:, None], pairs, pairs[:, ::-1])
    parent1, parent2 = population.take(pairs[:, 0]), population.take(pairs[:, 1])
    cross_keys = jax.random.split(cross_key, draws)
    distilled = jax.vmap(lambda c, a, b: distill_child(c, a, b, trainer.apply_actor, q_fn, evo)[0].members)(
        cross_keys, parent1, parent2)
    npoint = jax.vmap(lambda c, a, b: npoint_crossover(c, a, b)[0])(cross_keys, parent1.members, parent2.members)

    # Mutations: random parents, each mutated by both operators.
    parents = jax.random.randint(mutant_key, (draws,), 0, k)
    mutate_keys = jax.random.split(mutate_key, draws)
    chosen = population.take(parents)
    proximal = jax.vmap(lambda c, p, m: proximal_mutation(c, p, m, trainer.apply_actor, evo))(
        mutate_keys, chosen.members, chosen.memories)
    gaussian = jax.vmap(lambda c, p: gaussian_mutation(c, p, evo))(mutate_keys, chosen.members)

    # Mutation magnitude sweep on the fittest member (Figure 9).
    best = jnp.argmax(evaluated.returns)
    fittest = population.take(best)
    best_params, best_memory = fittest.members, fittest.memories
    sweep_keys = jnp.broadcast_to(sigma_key, (sigmas.shape[0],))  # same noise, scaled
    proximal_sweep = jax.vmap(lambda c, s: proximal_mutation(
        c, best_params, best_memory, trainer.apply_actor, evo.replace(mutation_sigma=s, mutation_sigma_noise=0.0)))(
        sweep_keys, sigmas)
    gaussian_sweep = jax.vmap(lambda c, s: gaussian_mutation(c, best_params, evo.replace(gaussian_strength=s)))(
        sweep_keys, sigmas)

    children = jax.tree.map(lambda *xs: jnp.concatenate(xs), distilled, npoint, proximal, gaussian)
    evaluated_children = behaviour(trainer, episode_key, children, episodes)
    split = lambda i: jax.tree.map(lambda x: x[i * draws:(i + 1) * draws], evaluated_children)
    sweep = jax.tree.map(lambda *xs: jnp.concatenate(xs), proximal_sweep, gaussian_sweep)
    evaluated_sweep = behaviour(trainer, episode_key, sweep, episodes)
    s = sigmas.shape[0]
    return OperatorStudy(
        population=evaluated, crossover_parents=pairs, distilled=split(0), npoint=split(1),
        mutation_parents=parents, proximal=split(2), gaussian=split(3), sigma_parent=best, sigmas=sigmas,
        proximal_by_sigma=jax.tree.map(lambda x: x[:s], evaluated_sweep),
        gaussian_by_sigma=jax.tree.map(lambda x: x[s:], evaluated_sweep),
    )
