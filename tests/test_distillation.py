"""Q-filtered distillation crossover (official `SSNE.distilation_crossover`;
docs/paper-and-official-code.md #1-#4).

Checked against hand-built cases and independent NumPy / plain-JAX formulas: the Q filter
(ties to parent 2, paper mode drops ties), the official and paper losses, the child's memory
(latest capacity/2 of each parent), the step count epochs * (size // N), the start from parent 2,
a hand-written Adam replay of the first steps, and inactive children in `distill_children`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.buffers.ring import RingBuffer, Transition
from pderl_jax.config import EvolutionConfig, NetworkConfig
from pderl_jax.networks import apply_actor, init_actor, make_actor
from pderl_jax.operators.distillation import (
    distill_child,
    distill_children,
    distillation_loss,
    q_filtered_targets,
)
from pderl_jax.operators.population import Population

OBS, ACT, CAPACITY, BATCH, EPOCHS = 3, 2, 64, 8, 20
ACTOR = make_actor(ACT, NetworkConfig(actor_hidden=(8, 8)))
CONFIG = EvolutionConfig(genetic_memory_capacity=CAPACITY, distill_batch_size=BATCH, distill_epochs=EPOCHS)


def apply(params, states):
    return apply_actor(ACTOR, params, states)


def q_fn(states, actions):
    """A fixed, smooth fake critic: prefers actions close to a state-dependent point."""
    goal = 0.8 * jnp.tanh(states[..., :ACT] * jnp.array([1.5, -2.0]))
    return -jnp.sum((actions - goal) ** 2, axis=-1)


def q_fn_np(states, actions):
    goal = 0.8 * np.tanh(states[..., :ACT] * np.array([1.5, -2.0]))
    return -np.sum((actions - goal) ** 2, axis=-1)


def fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


def make_memory(rng, tag: int, count: int, capacity: int = CAPACITY) -> RingBuffer:
    """`count` transitions appended in order. state = [noise, noise, tag + index / 1000]: the
    last entry identifies the item, and the action is a fixed function of the state (to check
    that rows stay aligned when the memory is merged and shuffled)."""
    index = np.arange(count)
    states = np.stack([rng.normal(size=count), rng.normal(size=count), tag + index / 1000.0], 1).astype(np.float32)
    actions = np.stack([states[:, 0] + states[:, 1], -states[:, 2]], 1).astype(np.float32)
    fields = {"state": states, "action": actions, "next_state": states + 1, "reward": index.astype(np.float32),
              "done": np.zeros(count, np.float32), "truncated": np.zeros(count, np.float32)}
    data = {}
    for name, values in fields.items():  # item i lands in ring slot i % capacity (FIFO overwrite)
        buffer = np.zeros((capacity,) + values.shape[1:], np.float32)
        for i in range(count):
            buffer[i % capacity] = values[i]
        data[name] = buffer
    return RingBuffer(data=Transition(**data), position=np.int32(count % capacity), size=np.int32(min(count, capacity)))


def item_index(states: np.ndarray) -> np.ndarray:
    return np.rint((states[:, 2] - np.floor(states[:, 2])) * 1000).astype(int)


def latest_states(memory: RingBuffer, n: int) -> np.ndarray:
    """Independent get_latest: the newest min(n, size) states, oldest first."""
    size, pos, cap = int(memory.size), int(memory.position), memory.capacity
    count = min(n, size)
    slots = [(pos - count + j) % cap for j in range(count)]
    return np.asarray(memory.data.state)[slots]


def sorted_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x[np.lexsort(x.T[::-1])] if len(x) else x


_init = jax.jit(lambda key: init_actor(key, ACTOR, OBS))
_apply = jax.jit(apply)
_targets = jax.jit(lambda states, p1, p2: q_filtered_targets(states, p1, p2, apply, q_fn))


def two_parents(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return _init(k1), _init(k2)


@jax.jit
def _distill(key, p1, p2, m1, m2, config):
    """distill_child on parameters and memories given apart: (child params, child memory, info)."""
    child, info = distill_child(key, Population(p1, m1), Population(p2, m2), apply, q_fn, config)
    return child.members, child.memories, info


def tree_max_abs_diff(a, b) -> float:
    a, b = jax.device_get((a, b))
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


# --------------------------------------------------------------------------------------------
# Q filter


def _table_actor(params, states):
    return params["table"][states[:, 0].astype(jnp.int32)]


def test_q_filtered_targets_hand_built():
    # Q(s, a) = a.sum(-1): parent-1 sums [1, 0, 1, 1, 0, 0.5], parent-2 sums [0, 1, 1, 0, 2, 1]
    table1 = np.array([[1, 0], [0, 0], [0.5, 0.5], [-1, 2], [3, -3], [0.25, 0.25]], np.float32)
    table2 = np.array([[0, 0], [1, 0], [1, 0], [0, 0], [1, 1], [0.5, 0.5]], np.float32)
    states = jnp.arange(6, dtype=jnp.float32)[:, None]
    q = lambda s, a: jnp.sum(a, axis=-1)
    expect_first = np.array([True, False, False, True, False, False])  # state 2 is a tie -> parent 2
    expected = np.where(expect_first[:, None], table1, table2)

    official = q_filtered_targets(states, {"table": jnp.asarray(table1)}, {"table": jnp.asarray(table2)},
                                  _table_actor, q, loss="official")
    np.testing.assert_array_equal(np.asarray(official.from_parent1), expect_first)
    np.testing.assert_array_equal(np.asarray(official.actions), expected)
    np.testing.assert_array_equal(np.asarray(official.weights), np.ones(6))

    paper = q_filtered_targets(states, {"table": jnp.asarray(table1)}, {"table": jnp.asarray(table2)},
                               _table_actor, q, loss="paper")
    np.testing.assert_array_equal(np.asarray(paper.from_parent1), expect_first)
    np.testing.assert_array_equal(np.asarray(paper.actions), expected)
    np.testing.assert_array_equal(np.asarray(paper.weights), [1, 1, 0, 1, 1, 1])


def test_q_filtered_targets_random_lookup():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    n = 50
    # Multiples of 2^-8 below 4: every product and difference below is exact in float32, so the
    # comparison holds whether or not XLA fuses them into one multiply-add.
    dyadic = lambda size: (np.round(np.clip(rng.normal(size=size), -3.9, 3.9) * 256) / 256).astype(np.float32)
    a1 = dyadic((n, ACT))
    a2 = dyadic((n, ACT))
    a2[:10] = a1[:10]  # identical actions: exact Q ties
    qtab = dyadic(n)
    # Q depends on the state id and on the action through its first component.
    q = lambda s, a: jnp.asarray(qtab)[s[:, 0].astype(jnp.int32)] * a[:, 0]
    states = jnp.arange(n, dtype=jnp.float32)[:, None]
    out = q_filtered_targets(states, {"table": jnp.asarray(a1)}, {"table": jnp.asarray(a2)}, _table_actor, q,
                             loss="paper")
    q1, q2 = qtab * a1[:, 0], qtab * a2[:, 0]
    first = (q1 - q2) > 0
    np.testing.assert_array_equal(np.asarray(out.from_parent1), first, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(np.asarray(out.actions), np.where(first[:, None], a1, a2), err_msg=f"seed {seed}")
    np.testing.assert_array_equal(np.asarray(out.weights), (q1 != q2).astype(np.float32), err_msg=f"seed {seed}")
    assert np.all(np.asarray(out.weights)[:10] == 0), seed


# --------------------------------------------------------------------------------------------
# Loss


def _loss_np(c, t, w, valid, kind):
    c, t, w, valid = (np.asarray(x, np.float64) for x in (c, t, w, valid))
    rows = valid.astype(bool)
    c, t, w = c[rows], t[rows], w[rows]
    if kind == "official":
        return float(np.sum((c - t) ** 2) + (np.mean(c**2) if len(c) else 0.0))
    n = len(c)
    return float(np.sum(w * np.sum((c - t) ** 2, axis=1)) + (np.sum(c**2) / n if n else 0.0))


@pytest.mark.parametrize("kind", ["official", "paper"])
def test_distillation_loss_matches_numpy(kind):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    loss = jax.jit(distillation_loss, static_argnums=4)
    for trial in range(20):
        n, a = (11, 3) if trial % 2 else (4, 1)
        c = rng.normal(size=(n, a)).astype(np.float32)
        t = rng.normal(size=(n, a)).astype(np.float32)
        w = np.ones(n, np.float32) if kind == "official" else rng.integers(0, 2, n).astype(np.float32)
        valid = rng.random(n) < 0.7
        valid[rng.integers(n)] = True
        # garbage in masked rows must not matter
        c[~valid] = 1e3
        t[~valid] = -1e3
        got = float(loss(jnp.asarray(c), jnp.asarray(t), jnp.asarray(w), jnp.asarray(valid), kind))
        want = _loss_np(c, t, w, valid, kind)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (seed, trial, n, a, got, want)


def test_distillation_loss_hand_worked():
    c = jnp.array([[1.0, 2.0], [0.0, -1.0], [5.0, 5.0]])
    t = jnp.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    valid = jnp.array([True, True, False])
    # official: (1 + 4) + (1 + 4) = 10, plus mean(1, 4, 0, 1) = 1.5
    assert float(distillation_loss(c, t, jnp.ones(3), valid, "official")) == pytest.approx(11.5)
    # paper with weights (1, 0): 5 + (5 + 1) / 2 = 8
    assert float(distillation_loss(c, t, jnp.array([1.0, 0.0, 1.0]), valid, "paper")) == pytest.approx(8.0)
    # no valid row: nothing
    assert float(distillation_loss(c, t, jnp.ones(3), jnp.zeros(3, bool), "official")) == 0.0


# --------------------------------------------------------------------------------------------
# distill_child


def test_child_memory_and_step_count():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    p1, p2 = two_parents(seed)
    m1 = make_memory(rng, 1, 80)  # wrapped: holds items 16..79, the child gets 48..79
    m2 = make_memory(rng, 2, 20)  # fewer than capacity/2: the child gets all 20
    child, memory, info = _distill(jax.random.key(seed), p1, p2, m1, m2, CONFIG)

    size = 32 + 20
    assert int(memory.size) == size, seed
    assert int(memory.position) == size % CAPACITY, seed
    states = np.asarray(memory.data.state)
    expected = np.concatenate([latest_states(m1, 32), latest_states(m2, 32)])
    assert set(item_index(latest_states(m1, 32))) == set(range(48, 80))
    np.testing.assert_array_equal(sorted_rows(states[:size]), sorted_rows(expected), err_msg=f"seed {seed}")
    np.testing.assert_array_equal(states[size:], 0, err_msg=f"seed {seed}")
    # shuffled (official), and each action still belongs to its state
    assert not np.array_equal(states[:size], expected), seed
    actions = np.asarray(memory.data.action)[:size]
    np.testing.assert_array_equal(actions[:, 0], states[:size, 0] + states[:size, 1])
    np.testing.assert_array_equal(actions[:, 1], -states[:size, 2])

    assert int(info.num_steps) == EPOCHS * (size // BATCH), seed
    targets = _targets(jnp.asarray(states[:size]), p1, p2)
    assert float(info.parent1_share) == pytest.approx(float(np.mean(np.asarray(targets.from_parent1))), abs=1e-6)
    assert np.isfinite(float(info.behaviour_mse)), seed
    assert tree_max_abs_diff(child, p2) > 0, seed


@pytest.mark.parametrize("count1,count2", [(32, 32), (64, 40), (9, 0), (7, 1)])
def test_child_step_count_other_sizes(count1, count2):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    p1, p2 = two_parents(seed)
    _, memory, info = _distill(jax.random.key(seed), p1, p2, make_memory(rng, 1, count1),
                               make_memory(rng, 2, count2), CONFIG)
    size = min(32, count1) + min(32, count2)
    assert int(memory.size) == size
    batch = min(BATCH, size)
    assert int(info.num_steps) == EPOCHS * (size // batch), (seed, count1, count2, int(info.num_steps))


def test_child_tiny_memory_replays_adam_by_hand():
    """5 memory states < batch 8: every step uses all 5 states, so the steps are deterministic
    and can be replayed with a hand-written Adam on a plainly written official loss."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    p1, p2 = two_parents(seed)
    m1, m2 = make_memory(rng, 1, 3), make_memory(rng, 2, 2)
    lr = 1e-2
    config = CONFIG.replace(distill_lr=lr)
    child, memory, info = _distill(jax.random.key(seed), p1, p2, m1, m2, config)
    assert int(memory.size) == 5 and int(info.num_steps) == EPOCHS * 1, seed

    states = jnp.asarray(np.concatenate([latest_states(m1, 3), latest_states(m2, 2)]))
    a1, a2 = _apply(p1, states), _apply(p2, states)
    q1 = q_fn_np(np.asarray(states, np.float64), np.asarray(a1, np.float64))
    q2 = q_fn_np(np.asarray(states, np.float64), np.asarray(a2, np.float64))
    target = jnp.where(jnp.asarray(q1 - q2 > 0)[:, None], a1, a2)

    @jax.jit
    @jax.grad
    def plain_grad(params):
        c = apply(params, states)
        return jnp.sum((c - target) ** 2) + jnp.mean(c**2)

    params = jax.tree.map(lambda x: np.asarray(x, np.float64), p2)
    m = jax.tree.map(np.zeros_like, params)
    v = jax.tree.map(np.zeros_like, params)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, EPOCHS + 1):
        grads = plain_grad(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params))
        grads = jax.tree.map(lambda g: np.asarray(g, np.float64), grads)
        m = jax.tree.map(lambda m_, g: b1 * m_ + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, v, grads)
        params = jax.tree.map(
            lambda p, m_, v_: p - lr * (m_ / (1 - b1**t)) / (np.sqrt(v_ / (1 - b2**t)) + eps), params, m, v)
    for path, got in jax.tree_util.tree_leaves_with_path(child):
        want = params
        for key in path:
            want = want[key.key]
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4,
                                   err_msg=f"seed {seed} leaf {jax.tree_util.keystr(path)}")
    # and the steps moved the child by about lr per step away from parent 2
    assert tree_max_abs_diff(child, p2) > 0.5 * lr, seed


def test_child_starts_from_parent2():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    p1, p2 = two_parents(seed)
    m1, m2 = make_memory(rng, 1, 40), make_memory(rng, 2, 40)
    lr = 1e-5
    child, _, info = _distill(jax.random.key(seed), p1, p2, m1, m2, CONFIG.replace(distill_lr=lr))
    steps = int(info.num_steps)
    assert steps == EPOCHS * (64 // BATCH)
    # Adam moves each parameter by at most ~lr per step (a few lr in the worst case).
    assert 0 < tree_max_abs_diff(child, p2) <= 4 * lr * steps + 1e-6, (seed, tree_max_abs_diff(child, p2))
    assert tree_max_abs_diff(child, p1) > 100 * lr * steps, seed


def _behaviour_mse(params, states, targets):
    return float(np.mean((np.asarray(_apply(params, states), np.float64) - np.asarray(targets, np.float64)) ** 2))


def test_child_imitates_the_q_filtered_targets():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    p1, p2 = two_parents(seed)
    m1, m2 = make_memory(rng, 1, 64), make_memory(rng, 2, 64)
    child, memory, info = _distill(jax.random.key(seed), p1, p2, m1, m2, CONFIG.replace(distill_lr=1e-2))
    assert int(info.num_steps) == EPOCHS * 8
    states = memory.data.state[: int(memory.size)]
    targets = _targets(states, p1, p2).actions
    share = float(info.parent1_share)
    parent2_mse = _behaviour_mse(p2, states, targets)
    child_mse = _behaviour_mse(child, states, targets)
    if share < 0.05:  # parent 2 already (almost) is the target; nothing to learn
        pytest.skip(f"degenerate draw (parent-1 share {share}), seed {seed}")
    assert child_mse < 0.85 * parent2_mse, (seed, share, child_mse, parent2_mse)
    # the reported MSE is of the same order as the final behaviour error
    assert float(info.behaviour_mse) < parent2_mse, (seed, float(info.behaviour_mse), parent2_mse)


# --------------------------------------------------------------------------------------------
# distill_children


def _stack(trees):
    return jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(trees))


def test_distill_children_active_mask():
    """Three children vmapped together (the accelerator path; evolve tests cover the CPU one)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    keys = jax.random.split(jax.random.key(seed), 4)
    population = _stack([_init(k) for k in keys])
    counts = [50, 10, 64, 3]
    memories = _stack([make_memory(rng, i + 1, c) for i, c in enumerate(counts)])
    parent1 = jnp.array([0, 2, 1])
    parent2 = jnp.array([1, 3, 3])
    active = jnp.array([True, False, True])
    config = CONFIG.replace(children_in_parallel=3)
    key = jax.random.key(seed + 1)
    run = jax.jit(lambda k, pop, mem, a, b, act, c: distill_children(k, Population(pop, mem), a, b, act, apply, q_fn,
                                                                     c))
    children, info = run(key, population, memories, parent1, parent2, active, config)
    children, child_memories = children.members, children.memories

    children, child_memories, info = jax.device_get((children, child_memories, info))
    take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
    # inactive: parent 2 and its memory, untouched; no steps
    for a, b in zip(jax.tree.leaves(take(children, 1)), jax.tree.leaves(take(population, 3))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"seed {seed}")
    for a, b in zip(jax.tree.leaves(take(child_memories, 1)), jax.tree.leaves(take(memories, 3))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"seed {seed}")
    assert int(info.num_steps[1]) == 0, seed

    child_keys = jax.random.split(key, 3)
    for c in (0, 2):
        i, j = int(parent1[c]), int(parent2[c])
        size = min(32, counts[i]) + min(32, counts[j])
        assert int(child_memories.size[c]) == size, (seed, c)
        assert int(info.num_steps[c]) == EPOCHS * (size // min(BATCH, size)), (seed, c)
        expected = np.concatenate([latest_states(take(memories, i), 32), latest_states(take(memories, j), 32)])
        np.testing.assert_array_equal(sorted_rows(np.asarray(child_memories.data.state[c])[:size]),
                                      sorted_rows(expected), err_msg=f"seed {seed} child {c}")
        # the same as a single distill_child with this child's key
        single, single_memory, _ = _distill(child_keys[c], take(population, i), take(population, j),
                                            take(memories, i), take(memories, j), CONFIG)
        assert tree_max_abs_diff(take(children, c), single) < 1e-5, (seed, c)
        np.testing.assert_array_equal(np.asarray(child_memories.data.state[c]), np.asarray(single_memory.data.state))
        assert tree_max_abs_diff(take(children, c), take(population, j)) > 0, (seed, c)

