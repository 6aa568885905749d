"""ERL's n-point crossover (official `SSNE.crossover_inplace`).

The package evaluates the official sequential in-place copy loop in closed form (first event
per row). Here the loop itself is run in NumPy with the same random events, drawn with the same
key splitting, and the children are compared exactly.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from pderl_jax.config import NetworkConfig
from pderl_jax.networks import init_actor, make_actor
from pderl_jax.operators.npoint import npoint_crossover

ACTOR = make_actor(2, NetworkConfig(actor_hidden=(8, 8)))
OBS = 3
_cross = jax.jit(npoint_crossover)


def fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


def structured_parents():
    """Every kernel column (torch row) and vector entry carries a unique value per parent:
    parent 1 is positive, parent 2 negative."""
    template = jax.eval_shape(lambda: init_actor(jax.random.key(0), ACTOR, OBS))
    leaves, treedef = jax.tree.flatten(template)
    one, two = [], []
    for t, leaf in enumerate(leaves):
        if leaf.ndim == 2:
            rows, cols = leaf.shape
            value = (t + 1) * 1000 + np.arange(cols)[None, :] + 0.001 * np.arange(rows)[:, None]
        else:
            value = (t + 1) * 1000 + np.arange(leaf.shape[0], dtype=np.float64)
        one.append(np.asarray(value + 1, np.float32))
        two.append(np.asarray(-(value + 1), np.float32))
    return jax.tree.unflatten(treedef, one), jax.tree.unflatten(treedef, two)


def test_rows_come_whole_from_one_parent():
    seed = fresh_seed()
    gene1, gene2 = structured_parents()
    touched_any = 0
    for key in jax.random.split(jax.random.key(seed), 20):
        child1, child2 = _cross(key, gene1, gene2)
        for g1, g2, c1, c2 in zip(*(jax.tree.leaves(t) for t in (gene1, gene2, child1, child2))):
            g1, g2, c1, c2 = (np.asarray(x) for x in (g1, g2, c1, c2))
            if g1.ndim == 1:  # view each vector entry as a one-element "row"
                g1, g2, c1, c2 = (x[None, :] for x in (g1, g2, c1, c2))
            for j in range(g1.shape[1]):
                col = lambda x: x[:, j]
                for c in (c1, c2):
                    assert np.array_equal(col(c), col(g1)) or np.array_equal(col(c), col(g2)), (seed, j)
                untouched = np.array_equal(col(c1), col(g1)) and np.array_equal(col(c2), col(g2))
                same = np.array_equal(col(c1), col(c2))
                assert untouched or same, (seed, j)  # a touched row is the same in both children
                touched_any += not untouched
    assert touched_any > 0, seed


def test_biases_and_layer_norm_are_crossed():
    seed = fresh_seed()
    gene1, gene2 = structured_parents()
    exchanged = {name: 0 for name in ("bias", "gamma", "beta")}
    for key in jax.random.split(jax.random.key(seed), 20):
        child1, child2 = _cross(key, gene1, gene2)
        for layer, leaves in child1.items():
            for name in exchanged:
                if name in leaves:
                    exchanged[name] += int(np.sum(np.asarray(leaves[name]) != np.asarray(gene1[layer][name])))
                    exchanged[name] += int(np.sum(np.asarray(child2[layer][name]) != np.asarray(gene2[layer][name])))
    assert all(v > 0 for v in exchanged.values()), (seed, exchanged)


@partial(jax.jit, static_argnums=(1, 2))
def _leaf_events(key, rows, max_events):
    """The event count, rows and directions of one leaf, drawn as the package draws them."""
    count_key, row_key, dir_key = jax.random.split(key, 3)
    return (jax.random.randint(count_key, (), 0, max_events),
            jax.random.randint(row_key, (max_events,), 0, rows),
            jax.random.uniform(dir_key, (max_events,)) < 0.5)


def _events(key, sizes):
    """One key per leaf in pytree order, each split into count / row / direction keys."""
    keys = jax.random.split(key, len(sizes))
    return [_leaf_events(keys[i], rows, max_events) for i, (rows, max_events) in enumerate(sizes)]


def official_sequential(key, gene1, gene2):
    """The official in-place loop (`crossover_inplace`) run on NumPy copies of the parents."""
    leaves1, treedef = jax.tree.flatten(gene1)
    leaves2 = treedef.flatten_up_to(gene2)
    # torch rows: kernel columns (flax [in, out]) or vector entries; fastrand bound 2 rows | len
    sizes = tuple((a.shape[1], 2 * a.shape[1]) if a.ndim == 2 else (a.shape[0], a.shape[0]) for a in leaves1)
    events = jax.device_get(_events(key, sizes))
    out1, out2, num_events = [], [], 0
    for (count, picks, into_first), a, b, (rows, max_events) in zip(events, leaves1, leaves2, sizes):
        w1, w2 = np.array(a), np.array(b)
        if w1.ndim == 2:  # work on torch layout: row r = kernel column r
            w1, w2 = w1.T.copy(), w2.T.copy()
        assert 0 <= count < max_events and w1.shape[0] == rows
        for e in range(int(count)):
            r = picks[e]
            if into_first[e]:
                w1[r] = w2[r]
            else:
                w2[r] = w1[r]
        num_events += int(count)
        if a.ndim == 2:
            w1, w2 = w1.T, w2.T
        out1.append(w1)
        out2.append(w2)
    return jax.tree.unflatten(treedef, out1), jax.tree.unflatten(treedef, out2), num_events


def test_matches_official_sequential_loop():
    seed = fresh_seed()
    k1, k2, keys = jax.random.split(jax.random.key(seed), 3)
    init = jax.jit(lambda k1, k2: (jax.tree.map(lambda x: x + 0.5, init_actor(k1, ACTOR, OBS)),
                                   init_actor(k2, ACTOR, OBS)))  # + 0.5: LN gamma/beta differ too
    gene1, gene2 = jax.device_get(init(k1, k2))
    total_events = 0
    for key in jax.random.split(keys, 25):
        child1, child2 = _cross(key, gene1, gene2)
        want1, want2, events = official_sequential(key, gene1, gene2)
        total_events += events
        for got, want in ((child1, want1), (child2, want2)):
            for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
                np.testing.assert_array_equal(np.asarray(g), w, err_msg=f"seed {seed} {jax.tree_util.keystr(path)}")
    assert total_events > 100, seed


def test_odd_shapes_against_official_loop_and_row_statistics():
    """Rectangular matrices, a length-1 vector (never crossed: n ~ U{0..0}) and a long vector.

    Exact comparison with the sequential loop on some keys; on many keys (without relying on the
    key layout) a kernel column is touched with probability E[1 - (1 - 1/rows)^n],
    n ~ U{0..2 rows - 1}, and the first copy goes either way with probability 1/2.
    """
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    shapes = {"a": {"kernel": (4, 6)}, "b": {"kernel": (9, 2), "bias": (1,)}, "c": {"bias": (30,)}}
    make = lambda sign: {layer: {name: (sign + 0.1 * rng.normal(size=shape)).astype(np.float32)
                                 for name, shape in leaves.items()} for layer, leaves in shapes.items()}
    gene1, gene2 = make(1.0), make(-1.0)
    keys = jax.random.split(jax.random.key(seed), 3000)
    cross_all = jax.jit(lambda ks: jax.lax.map(lambda k: npoint_crossover(k, gene1, gene2), ks))
    child1, child2 = jax.device_get(cross_all(keys))
    take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
    for i in range(25):
        want1, want2, _ = official_sequential(keys[i], gene1, gene2)
        for got, want in ((take(child1, i), want1), (take(child2, i), want2)):
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_array_equal(g, w, err_msg=f"seed {seed} key {i}")
    np.testing.assert_array_equal(np.asarray(child1["b"]["bias"]), np.broadcast_to(gene1["b"]["bias"], (3000, 1)))
    np.testing.assert_array_equal(np.asarray(child2["b"]["bias"]), np.broadcast_to(gene2["b"]["bias"], (3000, 1)))

    c1, c2 = np.asarray(child1["a"]["kernel"]), np.asarray(child2["a"]["kernel"])  # [keys, 4, 6]
    touched = (c1[:, 0, :] < 0) | (c2[:, 0, :] > 0)
    expected = np.mean(1 - (1 - 1 / 6) ** np.arange(12))
    assert abs(touched.mean() - expected) < 0.03, (seed, touched.mean(), expected)
    from_second = c1[:, 0, :][touched] < 0
    assert abs(from_second.mean() - 0.5) < 0.03, (seed, from_second.mean())
    # vectors: an entry is touched with probability E[1 - (1 - 1/30)^n], n ~ U{0..29}
    v1, v2 = np.asarray(child1["c"]["bias"]), np.asarray(child2["c"]["bias"])
    touched = (v1 < 0) | (v2 > 0)
    expected = np.mean(1 - (1 - 1 / 30) ** np.arange(30))
    assert abs(touched.mean() - expected) < 0.03, (seed, touched.mean(), expected)
