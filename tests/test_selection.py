"""Selection, pairing and one evolution step (official `SSNE.epoch`;
docs/paper-and-official-code.md #5, #6, #12).

Hand-worked cases, a pure-Python version of the official `sort_groups_by_fitness` + `SSNE.epoch`
pairing loop, invariants of the selection plan that any valid run of Steps A-E must satisfy,
tournament statistics, and `evolve` end to end on a small population.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.buffers.ring import RingBuffer, Transition
from pderl_jax.config import EVOLUTIONARY_MODES, Config, EvolutionConfig, NetworkConfig
from pderl_jax.networks import apply_actor, init_population, make_actor
from pderl_jax.operators.evolution import evolve
from pderl_jax.operators.population import Population
from pderl_jax.operators.selection import (
    RL_DISCARDED,
    RL_ELITE,
    RL_NONE,
    RL_SELECTED,
    all_pairs,
    assign_parents,
    pair_scores,
    pairing_fitness,
    plan_selection,
    rank_by_fitness,
    rl_sync_slot,
    tournament,
)


def fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


def win_probabilities(k: int, size: int = 3) -> np.ndarray:
    """P(rank r wins one tournament of `size` uniform ranks with replacement)."""
    r = np.arange(k)
    return ((k - r) ** size - (k - r - 1) ** size) / k**size


# --------------------------------------------------------------------------------------------
# Ranking and tournaments


def test_rank_by_fitness_is_numpy_argsort_reversed():
    """The official `argsort(fitness)[::-1]`. The 2019 numpy quicksort used insertion sort for
    n <= 16, i.e. was stable for population sizes like 10; numpy 2's default (SIMD) sort is not
    stable, so ties are compared with the stable sort explicitly: among equal fitness the higher
    slot comes first."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    for _ in range(30):
        k = int(rng.integers(2, 15))
        fitness = rng.integers(-3, 4, k).astype(np.float32)  # many ties
        got = np.asarray(rank_by_fitness(jnp.asarray(fitness)))
        want = np.argsort(fitness, kind="stable")[::-1]
        np.testing.assert_array_equal(got, want, err_msg=f"seed {seed} fitness {fitness}")
        distinct = rng.permutation(k).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(rank_by_fitness(jnp.asarray(distinct))), np.argsort(distinct)[::-1])
    np.testing.assert_array_equal(np.asarray(rank_by_fitness(jnp.array([1.0, 3.0, 3.0, 0.0, 3.0]))), [4, 2, 1, 0, 3])


_tournaments = jax.jit(jax.vmap(tournament, in_axes=(0, None, None, None)), static_argnums=(2, 3))


def _check_tournament_output(slots, count, k, seed):
    for row, c in zip(slots, count):
        assert c % 2 == 0 and 2 <= c <= k + 1, (seed, row, c)
        winners = row[:c]
        unique = np.unique(winners)
        assert np.all((0 <= winners) & (winners < k)), (seed, row)
        if len(unique) == c:  # even number of winners: ascending, no padding
            assert np.all(np.diff(winners) > 0), (seed, row, c)
        else:  # odd: ascending winners, then one duplicate of them
            assert len(unique) == c - 1 and np.all(np.diff(winners[:-1]) > 0), (seed, row, c)
            assert winners[-1] in winners[:-1], (seed, row, c)


def test_tournament_single_draw_statistics():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    k, n = 10, 20000
    rank = rng.permutation(k)
    slots, count = map(np.asarray, _tournaments(jax.random.split(jax.random.key(seed), n), jnp.asarray(rank), 1, 3))
    _check_tournament_output(slots, count, k, seed)
    assert np.all(count == 2) and np.all(slots[:, 0] == slots[:, 1]), seed  # one winner, duplicated
    winner_rank = np.argsort(rank)[slots[:, 0]]
    freq = np.bincount(winner_rank, minlength=k) / n
    p = win_probabilities(k)
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3), (seed, freq, p)


def test_tournament_many_draws_statistics():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    k, draws, n = 8, 6, 6000
    rank = rng.permutation(k)
    slots, count = map(np.asarray, _tournaments(jax.random.split(jax.random.key(seed), n), jnp.asarray(rank), draws, 3))
    _check_tournament_output(slots, count, k, seed)
    members = np.zeros((n, k), bool)
    for i, (row, c) in enumerate(zip(slots, count)):
        members[i, row[:c]] = True
    p_in = 1 - (1 - win_probabilities(k)) ** draws  # P(the slot of rank r is among the winners)
    freq = members[:, rank].mean(axis=0)
    assert np.all(np.abs(freq - p_in) < 5 * np.sqrt(p_in * (1 - p_in) / n) + 1e-3), (seed, freq, p_in)
    # the evening duplicate is a uniformly chosen winner: with 3 winners each is picked 1/3 of the time
    three = [(row[:3].tolist().index(row[3])) for row, c in zip(slots, count) if c == 4 and row[3] in row[:3]]
    if len(three) > 300:
        freq3 = np.bincount(three, minlength=3) / len(three)
        assert np.all(np.abs(freq3 - 1 / 3) < 5 * np.sqrt(2 / 9 / len(three))), (seed, freq3)


# --------------------------------------------------------------------------------------------
# plan_selection


def possible_pre_pop_lists(plan, fitness, num_elites):
    """All (unselected, offspring) lists before the elitism pops consistent with the plan and
    with Steps A-E: elites take the unselected slots first (in shuffled order), then offspring
    from the front; offspring = ascending unique winners (+ a duplicate of one of them if odd);
    unselected = every slot that is neither offspring nor elite."""
    k = len(fitness)
    elites = [int(x) for x in plan.elites]
    clone_slots = [int(x) for x in plan.elite_slots]
    offspring_left = [int(x) for x in plan.offspring[: int(plan.offspring_count)]]
    unselected_left = [int(x) for x in plan.unselected[: int(plan.unselected_count)]]
    out = []
    for s in range(num_elites + 1):
        unselected = clone_slots[:s] + unselected_left
        offspring = clone_slots[s:] + offspring_left
        if s != min(num_elites, len(unselected)):
            continue
        u = len(set(offspring))
        if u == 0 or len(offspring) != u + u % 2:
            continue
        head = offspring[:-1] if u % 2 else offspring
        if not np.all(np.diff(head) > 0) or (u % 2 and offspring[-1] not in head):
            continue
        if sorted(unselected) != sorted(set(range(k)) - set(offspring) - set(elites)):
            continue
        out.append((unselected, offspring))
    return out


def expected_outcome(slot, elites, offspring):
    if slot < 0:
        return RL_NONE
    if slot in elites:
        return RL_ELITE
    return RL_SELECTED if slot in offspring else RL_DISCARDED


_vmapped_plans = jax.jit(jax.vmap(plan_selection, in_axes=(0, 0, None, None, 0)), static_argnums=(2, 3))


PLAN_BATCH = 2000  # every call is padded to this many plans: one compile per (k, E, size)


def _plans(seed, n, fitness, num_elites, tournament_size, rl_slots):
    """n plans with independent keys (fitness [n, k] or [k], rl_slots [n] or scalar), as NumPy."""
    assert n <= PLAN_BATCH
    keys = jax.random.split(jax.random.key(seed), PLAN_BATCH)
    fitness = np.broadcast_to(np.asarray(fitness, np.float32), (n, np.shape(fitness)[-1]))
    fitness = np.concatenate([fitness, np.zeros((PLAN_BATCH - n, fitness.shape[1]), np.float32)])
    rl_slots = np.broadcast_to(np.asarray(rl_slots, np.int32), (n,))
    rl_slots = np.concatenate([rl_slots, np.full(PLAN_BATCH - n, -1, np.int32)])
    plans = jax.device_get(_vmapped_plans(keys, fitness, num_elites, tournament_size, rl_slots))
    return jax.tree.map(lambda x: x[:n], plans)


def _index(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.mark.parametrize("k,num_elites", [(8, 2), (4, 2)])
def test_plan_selection_invariants(k, num_elites):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    outcomes = set()
    trials = 60
    all_fitness = np.where(np.arange(trials)[:, None] % 2, rng.integers(0, 6, (trials, k)),
                           rng.normal(size=(trials, k))).astype(np.float32)
    rl_slots = rng.integers(-1, k, trials)
    rl_slots[0] = -1  # no sync
    rl_slots[1] = np.argsort(all_fitness[1], kind="stable")[-1]  # the best member: an elite
    plans = _plans(seed, trials, all_fitness, num_elites, 3, rl_slots)
    for trial in range(trials):
        fitness, rl_slot, plan = all_fitness[trial], int(rl_slots[trial]), _index(plans, trial)
        msg = f"seed {seed} trial {trial} fitness {fitness}"
        rank = np.argsort(fitness, kind="stable")[::-1]
        np.testing.assert_array_equal(plan.rank, rank, err_msg=msg)
        np.testing.assert_array_equal(plan.elites, rank[:num_elites], err_msg=msg)
        if plan.unselected_count > 0:  # all clone slots came from the (distinct) unselected slots
            assert len(set(plan.elite_slots.tolist())) == num_elites, msg
        # (otherwise a popped evening duplicate can receive two clones, as in the original)
        unselected_left = set(plan.unselected[: plan.unselected_count].tolist())
        assert not unselected_left & (set(plan.elite_slots.tolist()) | set(plan.elites.tolist())), msg
        assert not unselected_left & set(plan.offspring[: plan.offspring_count].tolist()), msg

        candidates = possible_pre_pop_lists(plan, fitness, num_elites)
        assert candidates, (msg, plan)
        for unselected, offspring in candidates:
            # k = |elites u offspring| + |unselected before the pops|
            assert len(set(offspring) | set(rank[:num_elites].tolist())) + len(unselected) == k, msg
        allowed = {expected_outcome(rl_slot, rank[:num_elites].tolist(), off) for _, off in candidates}
        assert int(plan.rl_outcome) in allowed, (msg, rl_slot, int(plan.rl_outcome), allowed)
        outcomes.add(int(plan.rl_outcome))
    if k == 8:  # all four classifications occur over 60 random trials
        assert outcomes == {RL_NONE, RL_ELITE, RL_SELECTED, RL_DISCARDED}, (seed, outcomes)


def test_plan_selection_hand_worked_unselected_runs_out():
    """Tournaments of 300 draws always pick rank 0: offspring = [best, best]."""
    fitness = np.array([2.0, 5.0, 1.0])  # rank [1, 0, 2]
    cases = ((1, RL_ELITE), (0, RL_ELITE), (2, RL_DISCARDED), (-1, RL_NONE))
    plans = _plans(fresh_seed(), 4, fitness, 2, 300, [c[0] for c in cases])
    for i, (rl_slot, outcome) in enumerate(cases):
        plan = _index(plans, i)
        np.testing.assert_array_equal(plan.rank, [1, 0, 2])
        np.testing.assert_array_equal(plan.elites, [1, 0])
        # elite 1 takes the only unselected slot 2, elite 0 the first offspring (slot 1)
        np.testing.assert_array_equal(plan.elite_slots, [2, 1])
        assert int(plan.offspring_count) == 1 and int(plan.offspring[0]) == 1
        assert int(plan.unselected_count) == 0
        assert int(plan.rl_outcome) == outcome


def test_plan_selection_hand_worked_shuffle_is_uniform():
    fitness = jnp.array([0.3, 0.1, 0.9, 0.5, 0.2, 0.4])  # best: slot 2
    seed = fresh_seed()
    n = PLAN_BATCH
    plans = _plans(seed, n, fitness, 1, 300, 2)
    assert np.all(plans.elites[:, 0] == 2) and np.all(plans.offspring_count == 2)
    assert np.all(plans.offspring[:, :2] == 2) and np.all(plans.rl_outcome == RL_ELITE)
    assert np.all(plans.unselected_count == 4)
    for i in range(n):
        got = {int(plans.elite_slots[i, 0])} | set(plans.unselected[i, :4].tolist())
        assert got == {0, 1, 3, 4, 5}, (seed, i)
    freq = np.bincount(plans.elite_slots[:, 0], minlength=6)[[0, 1, 3, 4, 5]] / n
    assert np.all(np.abs(freq - 0.2) < 0.045), (seed, freq)  # the elite slot is a uniform unselected one


def test_plan_selection_offspring_membership_statistics():
    """P(slot of rank r survives the k - E tournaments) = 1 - (1 - p_r)^(k - E)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    k, num_elites, n = 8, 2, PLAN_BATCH
    fitness = rng.permutation(k).astype(np.float32)
    rank = np.argsort(fitness)[::-1]
    plans = _plans(seed, n, fitness, num_elites, 3, -1)
    survived = np.zeros((n, k), bool)  # in the offspring list before the elitism pops
    for i in range(n):
        plan = _index(plans, i)
        candidates = possible_pre_pop_lists(plan, fitness, num_elites)
        assert candidates, (seed, i)
        survived[i, candidates[0][1]] = True
    p_in = 1 - (1 - win_probabilities(k)) ** (k - num_elites)
    freq = survived[:, rank].mean(axis=0)
    tol = 5 * np.sqrt(p_in * (1 - p_in) / n) + 0.01
    assert np.all(np.abs(freq - p_in) < tol), (seed, freq, p_in)


# --------------------------------------------------------------------------------------------
# Pairing


def official_pairs(candidates, fitness, num_children):
    """`sort_groups_by_fitness` and the distillation loop of `SSNE.epoch`, verbatim in spirit."""
    groups = []
    for i, first in enumerate(candidates):
        for second in candidates[i + 1:]:
            if fitness[first] < fitness[second]:
                groups.append((second, first, fitness[first] + fitness[second]))
            else:
                groups.append((first, second, fitness[first] + fitness[second]))
    groups = sorted(groups, key=lambda group: group[2], reverse=True)
    out = []
    for child in range(num_children):
        p1, p2, _ = groups[child % len(groups)]
        if fitness[p1] < fitness[p2]:
            p1, p2 = p2, p1
        out.append((p1, p2))
    return out


@partial(jax.jit, static_argnums=(3, 4))
def _assign_jit(fitness, slots, count, num_children, pairing, scores):
    if scores is None:
        scores = pair_scores(fitness, slots, None, "fitness", 0.0)
    return assign_parents(scores, fitness, slots, count, num_children, pairing)


def _assign(fitness, slots, count, num_children, pairing="fitness", scores=None):
    p1, p2 = _assign_jit(jnp.asarray(fitness, jnp.float32), jnp.asarray(slots, jnp.int32), jnp.int32(count),
                         num_children, pairing, scores)
    return list(zip(np.asarray(p1).tolist(), np.asarray(p2).tolist()))


def test_assign_parents_hand_worked():
    fitness = np.array([5, 1, 3, 0, 7, 2, 9, 4, 6], np.float32)
    slots = [6, 0, 1, 2, 4, 8, 0]  # fitness 9, 5, 1, 3, 7, 6, 5; slot 0 listed twice
    expected = [(6, 4), (6, 8), (6, 0), (6, 0), (4, 8), (6, 2), (4, 0), (4, 0), (8, 0), (8, 0), (6, 1), (0, 0),
                (4, 2), (8, 2), (0, 2), (4, 1), (0, 2), (8, 1), (0, 1), (0, 1), (2, 1)]
    assert official_pairs(slots, fitness, 21) == expected  # the reference agrees with the hand work
    assert _assign(fitness, slots, 7, 24) == expected + expected[:3]  # cycles after 21 pairs
    # padding after `count` is ignored
    assert _assign(fitness, slots + [6, 6, 6], 7, 5) == expected[:5]


def test_assign_parents_matches_official_on_random_cases():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    k, length, num_children = 11, 13, 15  # fixed shapes: one compile
    for trial in range(60):
        if trial % 2:
            fitness = rng.integers(-3, 4, k).astype(np.float32)  # ties in fitness and in sums
        else:
            fitness = rng.normal(size=k).astype(np.float32)
        count = int(rng.integers(2, length + 1))
        slots = rng.integers(0, k, count).tolist()
        if rng.random() < 0.5:
            slots[-1] = slots[int(rng.integers(count - 1))]  # an evening duplicate
        padded = slots + rng.integers(0, k, length - count).tolist()  # padding past `count`
        want = official_pairs(slots, [np.float32(f) for f in fitness], num_children)  # float32 sums
        got = _assign(fitness, padded, count, num_children)
        assert got == want, (seed, trial, fitness, slots, got, want)


def test_assign_parents_distance_pairing_picks_the_most_distant_pairs():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    fitness = rng.normal(size=6).astype(np.float32)
    slots = [3, 1, 5, 0]
    i, j = map(np.asarray, all_pairs(4))
    distances = rng.permutation(len(i)).astype(np.float32)
    got = _assign(fitness, slots, 4, 6, pairing="distance", scores=jnp.asarray(distances))
    order = np.argsort(-distances)
    for c, (p1, p2) in enumerate(got):
        pair = {slots[i[order[c]]], slots[j[order[c]]]}
        assert {p1, p2} == pair and fitness[p1] >= fitness[p2], (seed, c, got)


def test_pair_scores():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    fitness = jnp.asarray(rng.normal(size=7), jnp.float32)
    slots = jnp.array([4, 0, 6, 2, 5])
    i, j = all_pairs(5)
    sums = np.asarray(fitness)[np.asarray(slots)[np.asarray(i)]] + np.asarray(fitness)[np.asarray(slots)[np.asarray(j)]]
    distances = jnp.asarray(rng.uniform(0, 5, len(i)), jnp.float32)
    np.testing.assert_allclose(np.asarray(pair_scores(fitness, slots, None, "fitness", 0.5)), sums, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(pair_scores(fitness, slots, distances, "distance", 0.5)), distances)
    mix0 = np.asarray(pair_scores(fitness, slots, distances, "mixed", 0.0))
    mix1 = np.asarray(pair_scores(fitness, slots, distances, "mixed", 1.0))
    np.testing.assert_array_equal(np.argsort(mix0), np.argsort(sums), err_msg=f"seed {seed}")
    np.testing.assert_array_equal(np.argsort(mix1), np.argsort(np.asarray(distances)), err_msg=f"seed {seed}")
    norm = lambda x: (x - x.min()) / (x.max() - x.min())
    half = np.asarray(pair_scores(fitness, slots, distances, "mixed", 0.5))
    np.testing.assert_allclose(half, 0.5 * norm(sums) + 0.5 * norm(np.asarray(distances, np.float64)), atol=1e-6)


def test_pairing_fitness_and_rl_sync_slot():
    fitness = jnp.array([3.0, 1.0, 5.0, 2.0, 4.0, 0.0, -1.0, 2.5])
    plan = _index(_plans(fresh_seed(), 1, fitness, 2, 3, -1), 0)
    np.testing.assert_array_equal(np.asarray(pairing_fitness(fitness, plan, False)), np.asarray(fitness))
    fixed = np.asarray(fitness).copy()
    fixed[np.asarray(plan.elite_slots)] = np.asarray(fitness)[np.asarray(plan.elites)]
    np.testing.assert_array_equal(np.asarray(pairing_fitness(fitness, plan, True)), fixed)
    fixed_fitness = np.asarray(pairing_fitness(fitness, plan, True))
    np.testing.assert_array_equal(np.sort(fixed_fitness[np.asarray(plan.elite_slots)]),
                                  [4.0, 5.0])

    sync = lambda f, e, protect=False: int(rl_sync_slot(jnp.asarray(f, jnp.float32), jnp.asarray(e), protect))
    assert sync([3, 1, 5, 2], [0]) == 1  # argmin
    assert sync([3, 1, 5, 2], [1]) == 2  # argmin is the best elite's clone slot: next slot
    assert sync([3, 5, 2, 1], [3]) == 0  # ... wrapping around
    assert sync([3, 1, 0, 2], [2, 1]) == 3  # official: only new_elitists[0] is protected
    assert sync([3, 1, 0, 2], [1, 2]) == 2  # the second clone slot is not protected
    assert sync([3, 1, 0, 2], [1, 2], True) == 3  # protect_all_elites: worst non-clone slot
    assert sync([0, 1, 5, 2], [3, 0], True) == 1


# --------------------------------------------------------------------------------------------
# evolve end to end

K, OBS, ACT, CAPACITY = 6, 3, 2, 64
ACTOR = make_actor(ACT, NetworkConfig(actor_hidden=(8, 8)))
EVOLUTION = EvolutionConfig(pop_size=K, elite_fraction=0.34, genetic_memory_capacity=CAPACITY,
                            distill_batch_size=8, distill_epochs=1, proximal_batch_size=16, mutation_prob=0.5)


def _apply(params, states):
    return apply_actor(ACTOR, params, states)


def _q(states, actions):
    return -jnp.sum((actions - 0.5 * jnp.tanh(states[..., :ACT])) ** 2, axis=-1)


def _memory(rng, member, count):
    """A ring buffer after `count` appends (built in NumPy: item i lands in slot i % capacity)."""
    index = np.arange(count)
    states = np.stack([rng.normal(size=count), rng.normal(size=count), member + index / 1000.0], 1).astype(np.float32)
    fields = {"state": states, "action": rng.uniform(-1, 1, (count, ACT)).astype(np.float32),
              "next_state": states + 1, "reward": index.astype(np.float32),
              "done": np.zeros(count, np.float32), "truncated": np.zeros(count, np.float32)}
    data = {}
    for name, values in fields.items():
        buffer = np.zeros((CAPACITY,) + values.shape[1:], np.float32)
        for i in range(count):
            buffer[i % CAPACITY] = values[i]
        data[name] = buffer
    return RingBuffer(data=Transition(**data), position=np.int32(count % CAPACITY),
                      size=np.int32(min(count, CAPACITY)))


def _latest(memory: dict, n: int):
    """Newest min(n, size) items of a NumPy memory, oldest first, as a dict of arrays."""
    size, pos = int(memory["size"]), int(memory["position"])
    count = min(n, size)
    slots = [(pos - count + j) % CAPACITY for j in range(count)]
    return {name: memory[name][slots] for name in ("state", "action", "reward")}


def _clone(memory: dict) -> dict:
    latest = _latest(memory, CAPACITY)
    size = len(latest["reward"])
    out = {name: np.zeros_like(memory[name]) for name in ("state", "action", "reward")}
    for name in out:
        out[name][:size] = latest[name]
    return {**out, "size": size, "position": size % CAPACITY}


def _member_memory(memories: RingBuffer, i) -> dict:
    return {"state": np.asarray(memories.data.state[i]), "action": np.asarray(memories.data.action[i]),
            "reward": np.asarray(memories.data.reward[i]), "size": int(memories.size[i]),
            "position": int(memories.position[i])}


def _same_memory(a: dict, b: dict) -> bool:
    return (a["size"] == b["size"] and a["position"] == b["position"]
            and all(np.array_equal(a[n], b[n]) for n in ("state", "action", "reward")))


_evolve = {}


def run_evolve(crossover, mutation, key, population, memories, fitness, rl_slot):
    if (crossover, mutation) not in _evolve:
        _evolve[crossover, mutation] = jax.jit(lambda k, p, f, r, c: evolve(k, p, f, _apply, _q, c, r))
    mode = {pairing: mode for mode, pairing in EVOLUTIONARY_MODES.items()}[crossover, mutation]
    config = Config(mode=mode, evolution=EVOLUTION)
    assert (config.crossover, config.mutation) == (crossover, mutation)
    new, info = _evolve[crossover, mutation](key, Population(members=population, memories=memories), fitness,
                                             rl_slot, config)
    return new.members, new.memories, info


@pytest.mark.parametrize("crossover,mutation", [("distillation", "proximal"), ("npoint", "gaussian"),
                                                ("npoint", "proximal"), ("distillation", "gaussian")])
def test_evolve_end_to_end(crossover, mutation):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    num_elites = EVOLUTION.num_elites
    assert num_elites == 2
    counts = [5, 100, 64, 130, 10, 77]  # 100, 130 and 77 appends wrapped around the ring
    memories = jax.tree.map(lambda *xs: np.stack(xs), *[_memory(rng, i, c) for i, c in enumerate(counts)])
    population = jax.device_get(jax.jit(lambda key: init_population(key, ACTOR, OBS, K))(jax.random.key(seed)))
    checked = {"clone": 0, "untouched": 0, "mutated": 0, "child": 0}
    for trial in range(4):
        fitness = rng.normal(size=K).astype(np.float32)
        if trial == 0:  # the best member's memory has wrapped: its clone must be re-ordered
            fitness[3] = fitness.max() + 1
        rl_slot = int(rng.integers(-1, K))
        key = jax.random.key(int(rng.integers(2**31)))
        new_pop, new_mem, info = jax.device_get(
            run_evolve(crossover, mutation, key, population, memories, jnp.asarray(fitness), jnp.int32(rl_slot)))
        plan = info.plan
        msg = f"seed {seed} trial {trial} ({crossover}, {mutation})"

        # the expected population after the (sequential) elite cloning
        params = jax.tree.map(np.array, jax.device_get(population))
        mems = [_member_memory(memories, i) for i in range(K)]
        for source, target in zip(plan.elites, plan.elite_slots):
            for leaf in jax.tree.leaves(params):
                leaf[target] = leaf[source]
            mems[target] = _clone(mems[source])
        member = lambda tree, i: [np.asarray(x[i]) for x in jax.tree.leaves(tree)]
        names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]

        clone_slots = set(plan.elite_slots.tolist())
        refilled = sorted(int(s) for s in info.child_slots if s < K)
        if crossover == "npoint":  # children in list order; an evening duplicate keeps its last child
            u = int(plan.unselected_count)
            order = plan.unselected[:u].tolist()
            written = info.child_slots.tolist()
            assert all(s == K for s in written[u + u % 2:]), msg
            if u % 2:
                duplicate = written[u]
                assert duplicate in order, msg
                assert written[:u] == [K if s == duplicate else s for s in order], (msg, written, order)
            else:
                assert written[:u] == order, (msg, written, order)
        assert refilled == sorted(plan.unselected[: plan.unselected_count].tolist()), msg
        assert not clone_slots & set(refilled), msg
        assert not np.any(info.mutated[list(clone_slots)]), msg
        candidates = set(plan.elite_slots.tolist()) | set(plan.offspring[: plan.offspring_count].tolist())
        if rl_slot < 0:
            assert int(plan.rl_outcome) == RL_NONE, msg
        elif rl_slot in plan.elites.tolist():
            assert int(plan.rl_outcome) == RL_ELITE, msg
        elif rl_slot in plan.offspring[: plan.offspring_count].tolist():
            assert int(plan.rl_outcome) == RL_SELECTED, msg
        elif rl_slot in refilled:
            assert int(plan.rl_outcome) == RL_DISCARDED, msg

        for i in range(K):
            new_memory = _member_memory(new_mem, i)
            if i in clone_slots:  # exact copy of the elite (params and chronological memory)
                for a, b in zip(member(new_pop, i), member(params, i)):
                    np.testing.assert_array_equal(a, b, err_msg=msg)
                assert _same_memory(new_memory, mems[i]), (msg, i)
                checked["clone"] += 1
            elif i not in refilled:  # survivors keep their memory; only kernels may change
                assert _same_memory(new_memory, mems[i]), (msg, i)
                for name, a, b in zip(names, member(new_pop, i), member(params, i)):
                    if not info.mutated[i] or "kernel" not in name:
                        np.testing.assert_array_equal(a, b, err_msg=f"{msg} slot {i} {name}")
                checked["mutated" if info.mutated[i] else "untouched"] += 1

        for c, slot in enumerate(info.child_slots):
            if slot >= K:
                continue
            p1, p2 = (int(x) for x in info.parents[c])
            assert p1 in candidates and p2 in candidates, (msg, c, p1, p2, candidates)
            child_memory = _member_memory(new_mem, slot)
            if crossover == "distillation":
                assert fitness[p1] >= fitness[p2], (msg, c)  # fitter parent first (stale fitness)
                size = min(32, mems[p1]["size"]) + min(32, mems[p2]["size"])
                assert child_memory["size"] == size and child_memory["position"] == size % CAPACITY, (msg, c)
                inherited = np.concatenate([_latest(mems[p1], 32)["state"], _latest(mems[p2], 32)["state"]])
                sort = lambda x: x[np.lexsort(x.T[::-1])]
                np.testing.assert_array_equal(sort(child_memory["state"][:size]), sort(inherited), err_msg=msg)
                assert int(info.distillation.num_steps[c]) == EVOLUTION.distill_epochs * (size // min(8, size)), msg
                # trained from parent 2 by a few Adam steps of lr 1e-3 (kernels: unless mutated after)
                steps = int(info.distillation.num_steps[c])
                moved = 0.0
                for name, a, b in zip(names, member(new_pop, slot), member(params, p2)):
                    if info.mutated[slot] and "kernel" in name:
                        continue
                    moved = max(moved, float(np.max(np.abs(a - b))))
                    assert moved <= 3 * EVOLUTION.distill_lr * steps + 1e-6, (msg, c, name, moved, steps)
                assert moved > 0, (msg, c)
            else:
                master = p1 if c % 2 == 0 else p2  # (elite clone, offspring) pairs, interleaved
                assert p1 in clone_slots, msg
                assert _same_memory(child_memory, _clone(mems[master])), (msg, c)
                for name, a, x, y in zip(names, member(new_pop, slot), member(params, p1), member(params, p2)):
                    if info.mutated[slot] and "kernel" in name:
                        continue
                    a2, x2, y2 = (v if v.ndim == 2 else v[None, :] for v in (a, x, y))
                    whole = np.all((a2 == x2).all(0) | (a2 == y2).all(0))
                    assert whole, (msg, slot, name)  # every torch row from one of the two masters
            checked["child"] += 1
        if crossover == "distillation":
            inactive = np.asarray(info.child_slots) >= K
            assert np.all(info.distillation.num_steps[inactive] == 0), msg
        # next generation starts from this one
        population, memories = new_pop, new_mem
    assert checked["clone"] == 4 * num_elites and checked["child"] > 0, (seed, checked)


def test_selection_stats_accumulate_table_2_rates():
    from pderl_jax.operators.selection import RL_DISCARDED, RL_ELITE, RL_NONE, RL_SELECTED, SelectionStats

    rng = np.random.default_rng()
    outcomes = rng.choice([RL_NONE, RL_ELITE, RL_SELECTED, RL_DISCARDED], size=50)
    stats = SelectionStats.zeros()
    rates = stats.rates()
    assert all(float(v) == 0.0 for v in rates.values())
    for outcome in outcomes:
        stats = jax.jit(SelectionStats.update)(stats, jnp.int32(outcome))
    counted = outcomes[outcomes != RL_NONE]
    assert float(stats.total) == len(counted)
    rates = stats.rates()
    for name, code in (("elite_rate", RL_ELITE), ("selected_rate", RL_SELECTED), ("discarded_rate", RL_DISCARDED)):
        assert float(rates[name]) == pytest.approx(np.mean(counted == code)), (name, outcomes)
