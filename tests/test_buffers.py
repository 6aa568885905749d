"""Tests for the replay/genetic-memory buffers (pderl_jax.buffers).

The FIFO ring buffer is compared with a small pure-Python model of the official
`core/replay_memory.py::ReplayMemory` (a list plus a write `position`); sampling is checked for
distinctness, shapes under jit/vmap and uniformity. Every test draws fresh random data; assertion
messages carry the NumPy seed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pderl_jax.buffers.genetic_memory import crossover_memory, memories_add, memories_init
from pderl_jax.buffers.ring import (
    RingBuffer,
    Transition,
    ring_add,
    ring_clone,
    ring_from_items,
    ring_init,
    ring_latest,
    ring_sample,
)
from pderl_jax.buffers.sampling import sample_distinct
from pderl_jax.operators.population import Population

OBS, ACT = 3, 2
ROW = 2 * OBS + ACT + 3  # state, action, next_state, reward, done, truncated

# Compiling is what costs time (sample_distinct ~1-2 s per k): jit once here, and reuse few shapes.
ring_add_j = jax.jit(ring_add)
ring_latest_j = jax.jit(ring_latest, static_argnums=1)
ring_clone_j = jax.jit(ring_clone)
ring_sample_vj = jax.jit(jax.vmap(ring_sample, in_axes=(None, 0, None)), static_argnums=2)  # over keys
ring_from_items_j = jax.jit(ring_from_items, static_argnums=2)
sample_j = jax.jit(sample_distinct, static_argnums=2)
sample_vj = jax.jit(jax.vmap(sample_distinct, in_axes=(0, 0, None)), static_argnums=2)
# vmapped sample_distinct calls use one of two batch sizes (one compile per k and size)
NUM_DRAWS = 20000  # k in {2, 3}: statistics and mixed sizes
NUM_ROWS = 64  # k = 64: mixed sizes and n = 1e6
SAMPLE_BATCH = 5  # every ring_sample call draws this many, vmapped over SAMPLE_KEYS keys
SAMPLE_KEYS = 64
memories_add_j = jax.jit(memories_add)
crossover_j = jax.jit(crossover_memory, static_argnames="shuffle")
CROSSOVER_BATCH = 2000  # batched crossover: always this many pairs (one compile)
crossover_vj = jax.jit(jax.vmap(functools.partial(crossover_memory, shuffle=True)))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class _Seeded:
    """A NumPy generator that remembers its seed (for assertion messages) and makes JAX keys."""

    def __init__(self, seed):
        self.gen = np.random.default_rng(seed)
        self.seed = seed
        self.seed_msg = f"numpy seed={seed}"
        self.next_id = 1  # item ids (stored as the reward) keep every row unique

    def key(self):
        return jax.random.key(int(self.gen.integers(0, 2**31 - 1)))

    def keys(self, n):
        return jax.random.split(self.key(), n)

    def __getattr__(self, name):
        return getattr(self.gen, name)


@pytest.fixture
def rng():
    return _Seeded(int(np.random.SeedSequence().entropy % (2**63)))


class RefMemory:
    """Pure-Python model of the official ReplayMemory (core/replay_memory.py)."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.memory = []
        self.position = 0

    def add(self, item):
        if len(self.memory) < self.capacity:
            self.memory.append(None)
        self.memory[self.position] = item
        self.position = (self.position + 1) % self.capacity

    def __len__(self):
        return len(self.memory)

    def get_latest(self, n):
        latest = min(n, len(self.memory))
        if self.position >= latest:
            return self.memory[self.position - latest:self.position]
        return self.memory[-(latest - self.position):] + self.memory[:self.position]

    def reset(self):
        self.memory, self.position = [], 0

    def add_latest_from(self, other, n):
        for item in other.get_latest(n):
            self.add(item)


def take_member(stacked, index):
    """Entry `index` of a pytree stacked on axis 0 (one member's memory, or a whole member)."""
    return jax.tree.map(lambda x: x[index], stacked)


def make_items(rng, count, batch=()):
    """`count` random transitions (leading axes batch + (count,)), each with a unique id in reward."""
    shape = (*batch, count)
    n = math.prod(shape)
    ids = np.arange(rng.next_id, rng.next_id + n, dtype=np.float32).reshape(shape)
    rng.next_id += n
    f32 = np.float32
    return Transition(
        state=jnp.asarray(rng.normal(size=(*shape, OBS)).astype(f32)),
        action=jnp.asarray(rng.uniform(-1, 1, size=(*shape, ACT)).astype(f32)),
        next_state=jnp.asarray(rng.normal(size=(*shape, OBS)).astype(f32)),
        reward=jnp.asarray(ids),
        done=jnp.asarray(rng.integers(0, 2, shape).astype(f32)),
        truncated=jnp.asarray(rng.integers(0, 2, shape).astype(f32)),
    )


def rows_of(tr):
    """Transition [..., n] -> float64 array [..., n, ROW] (one row per item)."""
    return np.concatenate(
        [
            np.asarray(tr.state, np.float64),
            np.asarray(tr.action, np.float64),
            np.asarray(tr.next_state, np.float64),
            np.asarray(tr.reward, np.float64)[..., None],
            np.asarray(tr.done, np.float64)[..., None],
            np.asarray(tr.truncated, np.float64)[..., None],
        ],
        axis=-1,
    )


def as_list(rows):
    return [tuple(r) for r in np.asarray(rows)]


def ref_rows(items):
    return np.asarray(items, np.float64).reshape(-1, ROW)


def assert_matches_ref(buf, ref, msg):
    """Buffer state == reference: slot i holds ref.memory[i]; position and size agree; rest zero."""
    size = len(ref)
    assert int(buf.size) == size, f"size {int(buf.size)} != {size}; {msg}"
    assert int(buf.position) == ref.position, f"position {int(buf.position)} != {ref.position}; {msg}"
    data = rows_of(buf.data)
    assert data.shape == (ref.capacity, ROW), msg
    np.testing.assert_array_equal(data[:size], ref_rows(ref.memory), err_msg=msg)
    assert not np.any(data[size:]), f"unused slots not zero; {msg}"


def assert_latest_matches(buf, ref, n, msg):
    items, count = ring_latest_j(buf, n)
    want = ref.get_latest(n)
    assert int(count) == len(want), f"latest({n}) count {int(count)} != {len(want)}; {msg}"
    rows = rows_of(items)
    assert rows.shape == (n, ROW), msg
    np.testing.assert_array_equal(rows[:len(want)], ref_rows(want), err_msg=f"latest({n}); {msg}")
    assert not np.any(rows[len(want):]), f"latest({n}) padding not zero; {msg}"


def add_both(buf, ref, items, valid):
    """ring_add to the buffer; the reference gets the valid items one by one, in order."""
    buf = ring_add_j(buf, items, jnp.asarray(valid))
    for row, ok in zip(as_list(rows_of(items)), valid):
        if ok:
            ref.add(row)
    return buf


def filled(rng, capacity, count, chunk=9):
    """A buffer and its reference after `count` valid items (added in chunks of `chunk`)."""
    buf, ref = ring_init(capacity, OBS, ACT), RefMemory(capacity)
    while count > 0:
        t = min(chunk, count)
        buf = add_both(buf, ref, make_items(rng, chunk), np.arange(chunk) < t)
        count -= t
    return buf, ref


# --------------------------------------------------------------------------------------------
# ring buffer vs the official ReplayMemory
# --------------------------------------------------------------------------------------------

# Batch sizes are limited to a few values (one compile each); masks emulate other sizes.
SCENARIOS = {
    # name: list of (batch size, fraction valid or None for all)
    "no_wrap": [(3, None)],
    "exact_fill": [(3, None), (3, None), (3, 1 / 3)],
    "exact_fill_one_call": [(7, None)],
    "wrap_several_times": [(3, None), (9, None), (3, None), (9, None), (7, None), (9, None), (3, 1 / 3)],
    "batch_larger_than_capacity": [(20, None)],
    "partial_then_batch_larger_than_capacity": [(3, None), (20, None), (3, None)],
    "masked": [(9, 0.5), (9, 0.3), (20, 0.6), (3, 0.5), (9, 0.0), (20, 0.9)],
    "empty_batches": [(0, None), (3, None), (0, None), (9, 0.0)],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_ring_matches_official_replay_memory(rng, scenario):
    capacity = 7
    buf, ref = ring_init(capacity, OBS, ACT), RefMemory(capacity)
    assert_matches_ref(buf, ref, f"init; {rng.seed_msg}")
    for step, (count, frac) in enumerate(SCENARIOS[scenario]):
        if frac is None:
            valid = np.ones(count, bool)
        elif scenario == "masked":
            valid = rng.uniform(size=count) < frac
        else:  # the first round(frac * count) items only
            valid = np.arange(count) < round(frac * count)
        buf = add_both(buf, ref, make_items(rng, count), valid)
        msg = f"{scenario}, step {step}; {rng.seed_msg}"
        assert_matches_ref(buf, ref, msg)
        for n in (0, 1, 3, 6, capacity, capacity + 5):
            assert_latest_matches(buf, ref, n, msg)


@pytest.mark.parametrize("capacity", [7, 16])
def test_ring_random_sequence(rng, capacity):
    """Random batch sizes and masks (incl. all-invalid and oversized batches), many wraps."""
    buf, ref = ring_init(capacity, OBS, ACT), RefMemory(capacity)
    for step in range(14):
        count = int(rng.choice([0, 3, 9, 20]))
        valid = rng.uniform(size=count) < rng.choice([0.0, 0.3, 0.7, 1.0])
        buf = add_both(buf, ref, make_items(rng, count), valid)
        msg = f"step {step}, capacity {capacity}; {rng.seed_msg}"
        assert_matches_ref(buf, ref, msg)
        for n in (1, 6, 12):
            assert_latest_matches(buf, ref, n, msg)


def test_ring_add_masked_items_are_skipped_in_order(rng):
    """Only valid items are written, consecutively and in their original order."""
    buf = ring_init(7, OBS, ACT)
    items = make_items(rng, 9)
    valid = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0], bool)
    buf = ring_add_j(buf, items, jnp.asarray(valid))
    assert int(buf.size) == 4 and int(buf.position) == 4, rng.seed_msg
    np.testing.assert_array_equal(rows_of(buf.data)[:4], rows_of(items)[valid], err_msg=rng.seed_msg)
    assert not np.any(rows_of(buf.data)[4:])


def test_ring_add_without_mask_equals_all_valid(rng):
    items1, items2 = make_items(rng, 3), make_items(rng, 9)
    start = ring_add_j(ring_init(7, OBS, ACT), items1, jnp.ones(3, bool))
    a = jax.jit(ring_add)(start, items2)  # valid=None
    b = ring_add_j(start, items2, jnp.ones(9, bool))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=rng.seed_msg)
    assert int(a.position) == 12 % 7 and int(a.size) == 7


def test_ring_latest_wrapped_is_chronological(rng):
    """Hand-built case: capacity 7 after 17 items (ids 1..17): slots hold 15,16,17,11,12,13,14."""
    buf = ring_init(7, OBS, ACT)
    items = make_items(rng, 20)
    first = int(np.asarray(items.reward)[0])
    buf = ring_add_j(buf, items, jnp.asarray(np.arange(20) < 17))
    ids = np.asarray(buf.data.reward).astype(int) - first + 1
    assert ids.tolist() == [15, 16, 17, 11, 12, 13, 14], rng.seed_msg
    assert int(buf.position) == 3
    latest, count = ring_latest_j(buf, 5)
    assert int(count) == 5
    assert (np.asarray(latest.reward).astype(int) - first + 1).tolist() == [13, 14, 15, 16, 17]
    latest, count = ring_latest_j(buf, 10)
    assert int(count) == 7
    assert (np.asarray(latest.reward).astype(int) - first + 1).tolist() == [11, 12, 13, 14, 15, 16, 17, 0, 0, 0]


@pytest.mark.parametrize("history", [0, 3, 7, 12, 40])
def test_ring_clone(rng, history):
    capacity = 7
    master, ref_master = filled(rng, capacity, history)
    before = [np.array(x) for x in jax.tree.leaves(master)]
    clone = ring_clone_j(master)
    ref_clone = RefMemory(capacity)
    ref_clone.add_latest_from(ref_master, capacity)  # official clone: reset + get_latest(capacity)
    msg = f"history {history}; {rng.seed_msg}"
    assert_matches_ref(clone, ref_clone, msg)
    assert int(clone.position) == min(history, capacity) % capacity, msg
    # the clone is independent of the master and continues FIFO like the official one
    for x, y in zip(jax.tree.leaves(master), before):
        np.testing.assert_array_equal(x, y, err_msg=msg)
    for count in (3, 9, 3):
        clone = add_both(clone, ref_clone, make_items(rng, count), np.ones(count, bool))
        assert_matches_ref(clone, ref_clone, msg)
        assert_latest_matches(clone, ref_clone, 5, msg)
    assert_matches_ref(master, ref_master, msg)


@pytest.mark.parametrize("n,count", [(7, 0), (7, 4), (7, 7), (3, 3), (5, 2)])
def test_ring_from_items(rng, n, count):
    capacity = 7
    items = make_items(rng, n)
    buf = ring_from_items_j(items, jnp.asarray(count, jnp.int32), capacity)
    ref = RefMemory(capacity)
    for row in as_list(rows_of(items))[:count]:
        ref.add(row)
    msg = f"n={n} count={count}; {rng.seed_msg}"
    assert_matches_ref(buf, ref, msg)
    assert int(buf.position) == count % capacity
    buf = add_both(buf, ref, make_items(rng, 9), np.ones(9, bool))
    assert_matches_ref(buf, ref, msg)


@pytest.mark.parametrize("history", [0, 3, 5, 7, 30])
def test_ring_sample(rng, history):
    capacity, batch, draws = 7, SAMPLE_BATCH, SAMPLE_KEYS
    buf, ref = filled(rng, capacity, history)
    content = Counter(as_list(ref_rows(ref.memory)))
    items, valid = ring_sample_vj(buf, rng.keys(draws), batch)
    rows, valid = rows_of(items), np.asarray(valid)
    assert rows.shape == (draws, batch, ROW)
    m = min(len(ref), batch)
    seen = Counter()
    for d in range(draws):
        msg = f"history {history} draw {d}; {rng.seed_msg}"
        assert valid[d].tolist() == [True] * m + [False] * (batch - m), msg
        got = as_list(rows[d][:m])
        assert len(set(got)) == m, f"duplicates in a batch; {msg}"
        assert all(row in content for row in got), f"sampled item not in the buffer; {msg}"
        if len(ref) <= batch:
            assert Counter(got) == content, msg
        seen.update(got)
    if len(ref):  # P(an item is never drawn) <= 64 * (5/7)^64 ~ 3e-8
        assert set(seen) == set(content), f"some stored items never sampled; {rng.seed_msg}"


def test_ring_init_rejects_bad_capacity():
    with pytest.raises(ValueError):
        ring_init(0, OBS, ACT)


# --------------------------------------------------------------------------------------------
# Transition: done and truncated are separate fields
# --------------------------------------------------------------------------------------------


def test_transition_done_and_truncated_are_separate(rng):
    names = [f.name for f in dataclasses.fields(Transition)]
    assert names == ["state", "action", "next_state", "reward", "done", "truncated"]
    zeros = Transition.zeros((4,), OBS, ACT)
    assert zeros.done.shape == (4,) and zeros.truncated.shape == (4,)
    assert Transition.bytes_per_item(OBS, ACT) == 4 * ROW

    flags = np.array([(0, 0), (1, 0), (1, 1), (0, 1)], np.float32)
    items = make_items(rng, 4)
    items = items.replace(done=jnp.asarray(flags[:, 0]), truncated=jnp.asarray(flags[:, 1]))
    buf = ring_add_j(ring_init(7, OBS, ACT), items, jnp.ones(4, bool))
    np.testing.assert_array_equal(buf.data.done[:4], flags[:, 0])
    np.testing.assert_array_equal(buf.data.truncated[:4], flags[:, 1])
    latest, _ = ring_latest_j(buf, 4)
    np.testing.assert_array_equal(latest.done, flags[:, 0])
    np.testing.assert_array_equal(latest.truncated, flags[:, 1])
    # sampled items keep their own flags (matched through the id stored in reward)
    sample, valid = ring_sample_vj(buf, rng.keys(SAMPLE_KEYS), SAMPLE_BATCH)
    sample = jax.tree.map(lambda x: x[0, :4], sample)
    assert np.asarray(valid)[0].tolist() == [True] * 4 + [False]
    first = float(items.reward[0])
    idx = np.asarray(sample.reward - first).astype(int)
    assert sorted(idx.tolist()) == [0, 1, 2, 3], rng.seed_msg
    np.testing.assert_array_equal(sample.done, flags[idx, 0], err_msg=rng.seed_msg)
    np.testing.assert_array_equal(sample.truncated, flags[idx, 1], err_msg=rng.seed_msg)
    clone = ring_clone_j(buf)
    np.testing.assert_array_equal(clone.data.truncated[:4], flags[:, 1])
    np.testing.assert_array_equal(clone.data.done[:4], flags[:, 0])


# --------------------------------------------------------------------------------------------
# sample_distinct
# --------------------------------------------------------------------------------------------


def sample_batch(rng, ns, k):
    """sample_distinct vmapped over a fixed number of rows; row i draws from range(ns[i % len(ns)])."""
    rows = NUM_ROWS if k > 3 else NUM_DRAWS
    assert len(ns) <= rows
    ns = np.resize(np.asarray(ns, np.int64), rows)
    keys = rng.keys(rows)
    idx, valid = sample_vj(keys, jnp.asarray(ns, jnp.int32), k)
    return np.asarray(idx), np.asarray(valid), ns, keys


def check_sample(idx, valid, n, k, msg):
    idx, valid = np.asarray(idx), np.asarray(valid)
    m = min(n, k)
    assert idx.shape == (k,) and valid.shape == (k,), msg
    assert np.issubdtype(idx.dtype, np.integer), msg
    assert valid.tolist() == [True] * m + [False] * (k - m), f"valid mask (n={n}, k={k}); {msg}"
    chosen = idx[:m].tolist()
    assert len(set(chosen)) == m, f"duplicate indices (n={n}, k={k}): {chosen}; {msg}"
    assert all(0 <= i < n for i in chosen), f"index out of range (n={n}, k={k}): {chosen}; {msg}"
    assert not np.any(idx[m:]), f"masked slots must hold 0 (n={n}, k={k}); {msg}"
    if n <= k:
        assert sorted(chosen) == list(range(n)), f"n <= k must return all of range(n); {msg}"


@pytest.mark.parametrize("k", [2, 3, 64])
def test_sample_distinct_many_sizes_vmap(rng, k):
    """One vmapped batch mixing n < k, n == k, n slightly above k, large n (and n = 0)."""
    ns = {0, 1, max(k - 1, 0), k, k + 1, k + 2, 2 * k, 10 * k + 3, 1000, 10**6}
    ns |= {int(x) for x in rng.integers(0, 3 * k + 2, size=30)}
    ns |= {int(x) for x in rng.integers(k, 10**6, size=10)}
    ns = sorted(ns)
    idx, valid, _, _ = sample_batch(rng, ns, k)
    for row, n in enumerate(ns):
        check_sample(idx[row], valid[row], n, k, f"vmap row {row}; {rng.seed_msg}")


@pytest.mark.parametrize("k", [3])
def test_sample_distinct_jit(rng, k):
    """Unbatched under jit, with n traced or a Python int (same draws for the same key)."""
    for n in [0, 1, 2, 3, 4, 5, 7, 50, 10**6]:
        key = rng.key()
        i1, v1 = sample_j(key, jnp.asarray(n, jnp.int32), k)
        check_sample(i1, v1, n, k, f"jit n={n}; {rng.seed_msg}")
        i2, v2 = sample_j(key, n, k)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(v1, v2)


def test_sample_distinct_vmap_equals_unbatched(rng):
    """A vmapped batch of mixed n < k and n >= k (both cond branches run under vmap) gives the
    same draws as unbatched calls with the same keys."""
    k = 3
    ns = [0, 1, 2, 3, 4, 5, 7, 50, 10**6, 2, 3]
    idx, valid, _, keys = sample_batch(rng, ns, k)
    for row, n in enumerate(ns):
        i1, v1 = sample_j(keys[row], n, k)
        np.testing.assert_array_equal(i1, idx[row], err_msg=f"jit vs vmap, n={n}; {rng.seed_msg}")
        np.testing.assert_array_equal(v1, valid[row])


def test_sample_distinct_large_n(rng):
    n, k, num = 10**6, 64, NUM_ROWS
    idx, valid, _, _ = sample_batch(rng, [n], k)
    for row in range(num):
        check_sample(idx[row], valid[row], n, k, rng.seed_msg)
    idx = np.asarray(idx)
    # spread over the whole range, not a corner (each fails with probability ~2^-1024)
    assert idx.max() >= 0.9 * n and idx.min() < 0.1 * n, rng.seed_msg
    assert np.all(idx.max(axis=1) >= n // 4), rng.seed_msg  # P(fail) ~ 64 * 0.25^64
    assert len({tuple(r) for r in idx.tolist()}) == num, rng.seed_msg  # different keys, different draws


def _draws(rng, n, k, num):
    assert num == NUM_DRAWS
    idx, valid, _, _ = sample_batch(rng, [n], k)
    assert valid.sum() == num * min(n, k)
    return idx[:, : min(n, k)]


def _assert_uniform_counts(counts, cells, msg):
    """Chi-square test of equal frequencies over `cells` (every cell must be present)."""
    observed = np.array([counts.get(c, 0) for c in cells], float)
    assert observed.sum() == sum(counts.values()), f"unexpected outcomes {set(counts) - set(cells)}; {msg}"
    expected = observed.sum() / len(cells)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    p = stats.chi2.sf(chi2, len(cells) - 1)
    assert p > 1e-6, f"chi2={chi2:.1f} (dof {len(cells) - 1}, p={p:.2e}); counts={observed}; {msg}"
    # and each cell on its own within 5 binomial standard deviations
    q = 1.0 / len(cells)
    sd = math.sqrt(observed.sum() * q * (1 - q))
    assert np.all(np.abs(observed - expected) < 5 * sd), f"counts={observed}, sd={sd:.1f}; {msg}"


def test_sample_distinct_index_frequencies_uniform(rng):
    n, k, num = 10, 3, NUM_DRAWS
    draws = _draws(rng, n, k, num)
    # each index is in a draw with probability k/n = 0.3
    freq = np.bincount(draws.ravel(), minlength=n) / num
    sd = math.sqrt(0.3 * 0.7 / num)
    assert np.all(np.abs(freq - 0.3) < 5 * sd), f"freq={freq}, sd={sd:.4f}; {rng.seed_msg}"
    # every slot is uniform over range(n) on its own
    for slot in range(k):
        _assert_uniform_counts(Counter(draws[:, slot].tolist()), list(range(n)), f"slot {slot}; {rng.seed_msg}")


def test_sample_distinct_subset_frequencies_uniform(rng):
    n, k, num = 5, 2, NUM_DRAWS
    draws = _draws(rng, n, k, num)
    subsets = Counter(tuple(sorted(d)) for d in draws.tolist())
    _assert_uniform_counts(subsets, list(itertools.combinations(range(n), k)), rng.seed_msg)


@pytest.mark.parametrize("n,k", [(4, 3), (3, 3), (2, 3)])
def test_sample_distinct_ordered_tuples_uniform(rng, n, k):
    """Ordered outcomes are uniform too: n > k (rejection), n == k (rejection) and n < k (permutation)."""
    draws = _draws(rng, n, k, NUM_DRAWS)
    tuples = Counter(tuple(d) for d in draws.tolist())
    _assert_uniform_counts(tuples, list(itertools.permutations(range(n), min(n, k))), f"n={n} k={k}; {rng.seed_msg}")


# --------------------------------------------------------------------------------------------
# genetic memories
# --------------------------------------------------------------------------------------------


def test_memories_init():
    mem = memories_init(4, 7, OBS, ACT)
    assert isinstance(mem, RingBuffer)
    assert mem.capacity == 7
    assert mem.data.state.shape == (4, 7, OBS) and mem.data.action.shape == (4, 7, ACT)
    assert mem.data.next_state.shape == (4, 7, OBS)
    for leaf in (mem.data.reward, mem.data.done, mem.data.truncated):
        assert leaf.shape == (4, 7)
    assert mem.position.shape == (4,) and mem.size.shape == (4,)
    assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(mem))


def test_memories_add_per_member(rng):
    members, capacity = 3, 7
    mem = memories_init(members, capacity, OBS, ACT)
    refs = [RefMemory(capacity) for _ in range(members)]
    for step in range(6):
        items = make_items(rng, 9, batch=(members,))
        valid = rng.uniform(size=(members, 9)) < rng.uniform(0.2, 1.0, size=(members, 1))
        mem = memories_add_j(mem, items, jnp.asarray(valid))
        rows = rows_of(items)
        for k in range(members):
            for row, ok in zip(as_list(rows[k]), valid[k]):
                if ok:
                    refs[k].add(row)
        for k in range(members):
            msg = f"member {k}, step {step}; {rng.seed_msg}"
            assert_matches_ref(take_member(mem, k), refs[k], msg)
            assert_latest_matches(take_member(mem, k), refs[k], 4, msg)


def test_population_take_and_put(rng):
    """`Population.take/put` move a member's parameters and memory together; padding slots are dropped."""
    members, capacity = 4, 7
    mem = memories_init(members, capacity, OBS, ACT)
    mem = memories_add_j(mem, make_items(rng, 9, batch=(members,)), jnp.asarray(rng.uniform(size=(members, 9)) < 0.8))
    population = Population(members={"w": jnp.asarray(rng.normal(size=(members, 3)), jnp.float32)}, memories=mem)
    originals = [take_member(population, k) for k in range(members)]
    memory, ref = filled(rng, capacity, 11)
    new = Population(members={"w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)},
                     memories=jax.tree.map(lambda x: jnp.stack([x, x]), memory))
    # slot 2 receives new member 0; the padding slot `members` (new member 1) is dropped
    put = jax.jit(lambda p, s, n: p.put(s, n))(population, jnp.asarray([2, members]), new)
    assert_matches_ref(put.take(2).memories, ref, rng.seed_msg)
    np.testing.assert_array_equal(put.members["w"][2], new.members["w"][0])
    for k in (0, 1, 3):
        for x, y in zip(jax.tree.leaves(take_member(put, k)), jax.tree.leaves(originals[k])):
            np.testing.assert_array_equal(x, y, err_msg=f"member {k} changed; {rng.seed_msg}")
    # take under jit with a traced index, and with an index array
    taken = jax.jit(lambda p, i: p.take(i))(put, jnp.asarray(2))
    for x, y in zip(jax.tree.leaves(taken), jax.tree.leaves(new.take(0))):
        np.testing.assert_array_equal(x, y)
    stacked = put.take(jnp.asarray([3, 0]))
    assert stacked.size == 2
    for x, y in zip(jax.tree.leaves(stacked.take(1)), jax.tree.leaves(originals[0])):
        np.testing.assert_array_equal(x, y)


def ref_crossover(p1, p2):
    """Official child memory before the shuffle: reset, latest capacity/2 of p1, then of p2."""
    child = RefMemory(p1.capacity)
    half = p1.capacity // 2
    child.add_latest_from(p1, half)
    child.add_latest_from(p2, half)
    return child


CROSSOVER_HISTORIES = [(40, 33), (2, 40), (40, 0), (0, 2), ("half", "half-1"), (1, 1), (0, 0), (5, 9)]


def _history(h, capacity):
    return {"half": capacity // 2, "half-1": capacity // 2 - 1}.get(h, h)


def _crossover_case(rng, capacity, h1, h2, shuffle):
    """Two parents with the given fill histories, their child, and the reference child."""
    p1, ref1 = filled(rng, capacity, _history(h1, capacity))
    p2, ref2 = filled(rng, capacity, _history(h2, capacity))
    child = crossover_j(rng.key(), p1, p2, shuffle=shuffle)
    msg = f"capacity {capacity}, histories {h1}/{h2}; {rng.seed_msg}"
    return p1, p2, ref1, ref2, child, ref_crossover(ref1, ref2), msg


@pytest.mark.parametrize("capacity", [8, 7])
@pytest.mark.parametrize("h1,h2", CROSSOVER_HISTORIES)
def test_crossover_memory_unshuffled_is_official_order(rng, capacity, h1, h2):
    p1, p2, ref1, ref2, child, ref_child, msg = _crossover_case(rng, capacity, h1, h2, shuffle=False)
    half = capacity // 2
    assert len(ref_child) == min(len(ref1), half) + min(len(ref2), half)
    assert_matches_ref(child, ref_child, msg)  # order, size, position = size % capacity
    assert int(child.position) == len(ref_child) % capacity, msg
    # new experience continues FIFO from the child's position
    child = add_both(child, ref_child, make_items(rng, 3), np.ones(3, bool))
    assert_matches_ref(child, ref_child, msg)


@pytest.mark.parametrize("capacity", [8, 7])
@pytest.mark.parametrize("h1,h2", CROSSOVER_HISTORIES)
def test_crossover_memory_shuffled_same_content(rng, capacity, h1, h2):
    p1, p2, ref1, ref2, child, ref_child, msg = _crossover_case(rng, capacity, h1, h2, shuffle=True)
    size = len(ref_child)
    assert int(child.size) == size and int(child.position) == size % capacity, msg
    rows = rows_of(child.data)
    # same multiset of transitions (compare sorted rows), unused slots zero
    np.testing.assert_array_equal(
        np.array(sorted(as_list(rows[:size]))).reshape(-1, ROW),
        np.array(sorted(ref_child.memory)).reshape(-1, ROW),
        err_msg=msg,
    )
    assert not np.any(rows[size:]), msg
    # after the shuffle, new items go to `position` onward, overwriting whatever is there
    ref_after = RefMemory(capacity)
    ref_after.memory, ref_after.position = as_list(rows[:size]), int(child.position)
    child = add_both(child, ref_after, make_items(rng, 3), np.ones(3, bool))
    assert_matches_ref(child, ref_after, msg)


def test_crossover_memory_shuffle_changes_order(rng):
    capacity = 16
    p1, ref1 = filled(rng, capacity, 50)
    p2, ref2 = filled(rng, capacity, 21)
    key = rng.key()
    plain = crossover_j(key, p1, p2, shuffle=False)
    shuffled = crossover_j(key, p1, p2, shuffle=True)
    a, b = rows_of(plain.data), rows_of(shuffled.data)
    assert int(plain.size) == int(shuffled.size) == 16
    # identical order has probability 1/16!
    assert not np.array_equal(a, b), rng.seed_msg
    np.testing.assert_array_equal(np.array(sorted(as_list(a))), np.array(sorted(as_list(b))))
    # the shuffle mixes the two parents' halves, not only within each half
    assert set(as_list(b[:8])) != set(as_list(a[:8])), rng.seed_msg


def test_crossover_memory_shuffle_is_uniform(rng):
    """Over many keys every inherited transition lands in every slot about equally often."""
    capacity, num = 8, CROSSOVER_BATCH
    p1, ref1 = filled(rng, capacity, 30)
    p2, ref2 = filled(rng, capacity, 13)
    order = as_list(ref_rows(ref_crossover(ref1, ref2).memory))
    batch = lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (num, *x.shape)), tree)
    children = crossover_vj(rng.keys(num), batch(p1), batch(p2))
    ids = np.asarray(children.data.reward)  # [num, capacity]; ids are unique per transition
    position_of = {row[2 * OBS + ACT]: i for i, row in enumerate(order)}
    counts = np.zeros((capacity, capacity))
    for draw in ids:
        for slot, v in enumerate(draw):
            counts[position_of[float(v)], slot] += 1
    p = 1 / capacity
    sd = math.sqrt(num * p * (1 - p))
    assert np.all(np.abs(counts - num * p) < 5 * sd), f"counts={counts}; {rng.seed_msg}"


def test_crossover_memory_under_vmap(rng):
    """Batched over pairs (as the population step uses it) == one pair at a time."""
    members, capacity = 4, 8
    mem = memories_init(members, capacity, OBS, ACT)
    for _ in range(3):
        mem = memories_add_j(mem, make_items(rng, 9, batch=(members,)),
                             jnp.asarray(rng.uniform(size=(members, 9)) < 0.7))
    first = np.resize([0, 2, 3, 1], CROSSOVER_BATCH)
    second = np.resize([1, 3, 0, 1], CROSSOVER_BATCH)
    keys = rng.keys(CROSSOVER_BATCH)
    batched = crossover_vj(keys, take_member(mem, first), take_member(mem, second))
    for i in range(4):
        single = crossover_j(keys[i], take_member(mem, int(first[i])), take_member(mem, int(second[i])),
                             shuffle=True)
        for x, y in zip(jax.tree.leaves(take_member(batched, i)), jax.tree.leaves(single)):
            np.testing.assert_array_equal(x, y, err_msg=f"pair {i}; {rng.seed_msg}")
