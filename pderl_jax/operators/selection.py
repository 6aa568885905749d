"""Selection as in the official `SSNE.epoch`, with fixed shapes.

Variable-length Python lists of the original become fixed-length index arrays plus a count
(entries past the count are padding). Order matters and is kept: the pairing of parents, the
elite clone slots and the duplicates used to even out pairs all follow the original's lists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pderl_jax.buffers.ring import ring_latest
from pderl_jax.buffers.sampling import sample_distinct
from pderl_jax.networks import ActorApply
from pderl_jax.operators.population import Population


RL_NONE, RL_ELITE, RL_SELECTED, RL_DISCARDED = 0, 1, 2, 3


@struct.dataclass
class SelectionPlan:
    """Who survives, who is cloned where, and which slots are refilled."""

    rank: jax.Array  # [k] slots, best first
    elites: jax.Array  # [E] elite source slots, best first
    elite_slots: jax.Array  # [E] slots receiving the elite clones ("new_elitists")
    offspring: jax.Array  # [k+1] tournament winners (ascending, evened) after elitism pops
    offspring_count: jax.Array
    unselected: jax.Array  # [k] slots to refill with children, shuffled, after elitism pops
    unselected_count: jax.Array
    rl_outcome: jax.Array  # RL_NONE / RL_ELITE / RL_SELECTED / RL_DISCARDED for `rl_slot`


@struct.dataclass
class SelectionStats:
    """What happened to the synced RL actor at the next selection, counted per outcome (Table 2)."""

    counts: jax.Array  # [4] float, indexed by RL_NONE / RL_ELITE / RL_SELECTED / RL_DISCARDED

    @property
    def total(self) -> jax.Array:
        return jnp.sum(self.counts[RL_ELITE:])

    @classmethod
    def zeros(cls) -> "SelectionStats":
        return cls(counts=jnp.zeros((4,), jnp.float32))

    def update(self, rl_outcome: jax.Array) -> "SelectionStats":
        return SelectionStats(counts=self.counts.at[rl_outcome].add(1.0))

    def rates(self) -> dict[str, jax.Array]:
        """Cumulative elite / selected / discarded rates (0 before the first sync)."""
        total = jnp.maximum(self.total, 1.0)
        return {"elite_rate": self.counts[RL_ELITE] / total, "selected_rate": self.counts[RL_SELECTED] / total,
                "discarded_rate": self.counts[RL_DISCARDED] / total}


def rank_by_fitness(fitness: jax.Array) -> jax.Array:
    """Stable `argsort(fitness)[::-1]`: best first; among equal fitness the higher slot first.

    (The official code uses numpy's default sort, which for populations of 16 or fewer was
    stable in the numpy of its time.)"""
    return jnp.argsort(fitness, stable=True)[::-1]


def tournament(key: jax.Array, rank: jax.Array, num_draws: int, tournament_size: int) -> tuple[jax.Array, jax.Array]:
    """Rank-based tournaments; unique winners in ascending slot order, evened with a duplicate.

    Each draw takes the best rank among `tournament_size` uniform ranks (with replacement).
    Returns ([k+1] slots, count).
    """
    k = rank.shape[0]
    draw_key, pad_key = jax.random.split(key)
    ranks = jax.random.randint(draw_key, (num_draws, tournament_size), 0, k)
    winners = rank[jnp.min(ranks, axis=1)]
    chosen = jnp.zeros((k,), bool).at[winners].set(True)
    unique = jnp.nonzero(chosen, size=k + 1, fill_value=0)[0]
    count = jnp.sum(chosen)
    odd = count % 2 == 1
    duplicate = unique[jax.random.randint(pad_key, (), 0, jnp.maximum(count, 1))]
    unique = unique.at[count].set(jnp.where(odd, duplicate, unique[count]))
    return unique, count + odd


def shuffled_slots(key: jax.Array, members: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The slots where `members` is True, in random order, left-aligned; plus their count."""
    scores = jnp.where(members, jax.random.uniform(key, members.shape), 2.0)
    return jnp.argsort(scores), jnp.sum(members)


def plan_selection(key: jax.Array, fitness: jax.Array, num_elites: int, tournament_size: int = 3,
                   rl_slot: jax.Array | int = -1) -> SelectionPlan:
    """Steps A-E of `SSNE.epoch`: rank, tournament, unselected, RL statistics, elite slots."""
    k = fitness.shape[0]
    tournament_key, shuffle_key = jax.random.split(key)
    rank = rank_by_fitness(fitness)
    elites = rank[:num_elites]
    offspring, offspring_count = tournament(tournament_key, rank, k - num_elites, tournament_size)

    slots = jnp.arange(k)
    in_offspring = jnp.any((slots[:, None] == offspring[None, :]) & (jnp.arange(k + 1) < offspring_count)[None, :], axis=1)
    is_elite = jnp.any(slots[:, None] == elites[None, :], axis=1)
    unselected, unselected_count = shuffled_slots(shuffle_key, ~in_offspring & ~is_elite)

    rl_slot = jnp.asarray(rl_slot)
    safe = jnp.clip(rl_slot, 0, k - 1)
    rl_outcome = jnp.where(
        rl_slot < 0, RL_NONE,
        jnp.where(is_elite[safe], RL_ELITE, jnp.where(in_offspring[safe], RL_SELECTED, RL_DISCARDED)),
    )

    # Elitism: each elite (best first) takes the next unselected slot, or else the first offspring.
    e = jnp.arange(num_elites)
    from_unselected = e < unselected_count
    popped_offspring = jnp.maximum(num_elites - unselected_count, 0)
    elite_slots = jnp.where(from_unselected, unselected[jnp.minimum(e, k - 1)],
                            offspring[jnp.clip(e - unselected_count, 0, k)])
    used_unselected = jnp.minimum(num_elites, unselected_count)
    return SelectionPlan(
        rank=rank,
        elites=elites,
        elite_slots=elite_slots,
        offspring=jnp.roll(offspring, -popped_offspring),
        offspring_count=offspring_count - popped_offspring,
        unselected=jnp.roll(unselected, -used_unselected),
        unselected_count=unselected_count - used_unselected,
        rl_outcome=rl_outcome.astype(jnp.int32),
    )


def pairing_fitness(fitness: jax.Array, plan: SelectionPlan, fix_elite_fitness: bool) -> jax.Array:
    """Fitness used to score and order parents.

    Official: the pre-evolution array, so an elite clone slot keeps the fitness of the member it
    replaced (ref. #5). `fix_elite_fitness` gives clone slots their master's fitness.
    """
    if not fix_elite_fitness:
        return fitness
    return fitness.at[plan.elite_slots].set(fitness[plan.elites])


def candidate_parents(plan: SelectionPlan) -> tuple[jax.Array, jax.Array]:
    """`new_elitists + offsprings` of the original: ([E + k + 1] slots, count)."""
    slots = jnp.concatenate([plan.elite_slots, plan.offspring])
    return slots, plan.elite_slots.shape[0] + plan.offspring_count


def all_pairs(length: int) -> tuple[jax.Array, jax.Array]:
    """Positions (i, j), i < j, in the original's nested-loop order."""
    i, j = np.triu_indices(length, k=1)
    return jnp.asarray(i, jnp.int32), jnp.asarray(j, jnp.int32)


def pair_distances(key: jax.Array, population: Population, slots: jax.Array, apply_actor: ActorApply,
                   batch_size: int = 256, window: int = 1000, metric: str = "paper") -> jax.Array:
    """Behaviour distance of every candidate pair (all_pairs order) -> [P].

    States come from the latest `window` transitions of each memory, min(batch_size, |Rx|, |Ry|)
    drawn without replacement from each. paper: E_x ||mu_x - mu_y||^2 + E_y ||mu_x - mu_y||^2.
    official (ref. #6): uses the *stored* action of the other member's memory in place of its
    current output, i.e. E_{(s,a)~R_y} ||a - mu_x(s)||^2 + E_{(s,a)~R_x} ||a - mu_y(s)||^2.
    """
    first, second = all_pairs(slots.shape[0])

    def distance(pair_key, x, y):
        x, y = population.take(x), population.take(y)
        px, py = x.members, y.members
        n = jnp.minimum(batch_size, jnp.minimum(x.memories.size, y.memories.size))
        kx, ky = jax.random.split(pair_key)

        def batch(k, memory):
            recent, count = ring_latest(memory, window)
            rows, _ = sample_distinct(k, count, batch_size)
            valid = jnp.arange(batch_size) < n
            return recent.state[rows], recent.action[rows], valid

        sx, ax, vx = batch(kx, x.memories)
        sy, ay, vy = batch(ky, y.memories)
        mean = lambda sq, v: jnp.sum(v * sq) / jnp.maximum(jnp.sum(v), 1)
        sqdist = lambda a, b: jnp.sum((a - b) ** 2, axis=-1)
        if metric == "official":
            return mean(sqdist(ay, apply_actor(px, sy)), vy) + mean(sqdist(ax, apply_actor(py, sx)), vx)
        return (mean(sqdist(apply_actor(px, sx), apply_actor(py, sx)), vx)
                + mean(sqdist(apply_actor(px, sy), apply_actor(py, sy)), vy))

    keys = jax.random.split(key, first.shape[0])
    return jax.vmap(distance)(keys, slots[first], slots[second])


def pair_scores(fitness: jax.Array, slots: jax.Array, distances: jax.Array | None, pairing: str,
                mix: float) -> jax.Array:
    """Mating score per pair: fitness sum, behaviour distance, or a convex mix of both.

    For "mixed" both scores are min-max normalised over the pairs first, so `mix` weighs
    comparable quantities: (1 - mix) * fitness_sum + mix * distance.
    """
    first, second = all_pairs(slots.shape[0])
    greedy = fitness[slots[first]] + fitness[slots[second]]
    if pairing == "fitness":
        return greedy
    if pairing == "distance":
        return distances
    return (1.0 - mix) * _min_max(greedy) + mix * _min_max(distances)


def _min_max(x):
    finite = jnp.isfinite(x)
    lo = jnp.min(jnp.where(finite, x, jnp.inf))
    hi = jnp.max(jnp.where(finite, x, -jnp.inf))
    return jnp.where(hi > lo, (x - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)


def assign_parents(scores: jax.Array, fitness: jax.Array, slots: jax.Array, count: jax.Array,
                   num_children: int, pairing: str) -> tuple[jax.Array, jax.Array]:
    """Parents of the c-th child: the c-th best pair (cycling), fitter parent first.

    Pairs are sorted by score, descending and stable, as Python's `sorted(reverse=True)`.
    The fitter-first order uses `fitness`; ties keep the list order for greedy pairing and the
    reversed order for distance pairing, as the original stores those groups reversed.
    """
    first, second = all_pairs(slots.shape[0])
    valid = second < count
    order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True)
    num_valid = jnp.maximum(jnp.sum(valid), 1)
    chosen = order[jnp.arange(num_children) % num_valid]
    a, b = slots[first[chosen]], slots[second[chosen]]
    if pairing != "fitness":
        a, b = b, a
    swap = fitness[a] < fitness[b]
    return jnp.where(swap, b, a), jnp.where(swap, a, b)


def rl_sync_slot(fitness: jax.Array, elite_slots: jax.Array, protect_all_elites: bool = False) -> jax.Array:
    """Slot that receives the RL actor: the worst pre-evolution fitness.

    Official: argmin, moved to the next slot if it is the best elite's clone slot (only
    `new_elitists[0]` is protected; ref. #12). `protect_all_elites` skips every elite clone slot.
    """
    k = fitness.shape[0]
    if protect_all_elites:
        is_clone = jnp.any(jnp.arange(k)[:, None] == elite_slots[None, :], axis=1)
        return jnp.argmin(jnp.where(is_clone, jnp.inf, fitness))
    worst = jnp.argmin(fitness)
    return jnp.where(worst == elite_slots[0], (worst + 1) % k, worst)
