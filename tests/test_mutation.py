"""Proximal (SM-G-SUM) and Gaussian mutation (official `SSNE.proximal_mutate` and `SSNE.mutate_inplace`;
docs/paper-and-official-code.md #7-#9, #25).

The sensitivity is checked against central finite differences of an independent float64 NumPy
forward pass; the proximal step against that sensitivity on a memory of identical states (so any
sampled batch is known); the Gaussian mutation by its statistics over many draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.buffers.ring import RingBuffer, Transition
from pderl_jax.config import EvolutionConfig, NetworkConfig
from pderl_jax.networks import apply_actor, init_actor, make_actor
from pderl_jax.operators.mutation import gaussian_mutation, output_sensitivity, proximal_mutation

TINY = make_actor(2, NetworkConfig(actor_hidden=(4, 4)))
OFFICIAL = make_actor(6, NetworkConfig(actor_hidden=(128, 128)))  # HalfCheetah: 17 -> 128 -> 128 -> 6
OFFICIAL_OBS = 17


def fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


_init_tiny = jax.jit(lambda key: init_actor(key, TINY, 3))
_init_official = jax.jit(lambda key: init_actor(key, OFFICIAL, OFFICIAL_OBS))


def apply_tiny(params, states):
    return apply_actor(TINY, params, states)


def apply_official(params, states):
    return apply_actor(OFFICIAL, params, states)


def leaves_with_names(params):
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)]


# --------------------------------------------------------------------------------------------
# An independent float64 forward pass of the official actor (flax kernel layout [in, out]).


def forward_np(params, states):
    h = np.asarray(states, np.float64)
    layer = 1
    while f"w_l{layer}" in params:
        h = h @ params[f"w_l{layer}"]["kernel"] + params[f"w_l{layer}"]["bias"]
        ln = params[f"lnorm{layer}"]
        mu = h.mean(-1, keepdims=True)
        sd = np.sqrt(np.sum((h - mu) ** 2, -1, keepdims=True) / (h.shape[-1] - 1))
        h = np.tanh(ln["gamma"] * (h - mu) / (sd + 1e-6) + ln["beta"])
        layer += 1
    return np.tanh(h @ params["w_out"]["kernel"] + params["w_out"]["bias"])


def to_np64(params):
    return jax.tree.map(lambda x: np.array(x, np.float64), params)


def fd_raw_sensitivity(params, states, eps=1e-6):
    """sqrt(sum_k (d/dW sum_i mu(s_i)_k)^2) per kernel entry by central differences, no clamps."""
    p = to_np64(params)
    out = {}
    for layer, leaves in p.items():
        if "kernel" not in leaves:
            continue
        kernel = leaves["kernel"]
        sens = np.zeros_like(kernel)
        for idx in np.ndindex(kernel.shape):
            old = kernel[idx]
            kernel[idx] = old + eps
            plus = forward_np(p, states).sum(0)
            kernel[idx] = old - eps
            minus = forward_np(p, states).sum(0)
            kernel[idx] = old
            sens[idx] = np.sqrt(np.sum(((plus - minus) / (2 * eps)) ** 2))
        out[layer] = sens
    return out


def clamp(sens):
    sens = np.where(sens == 0.0, 1.0, sens)
    return np.where(sens < 0.01, 0.01, sens)


def test_numpy_forward_matches_actor():
    """Guard for the reference forward pass used below."""
    seed = fresh_seed()
    params = _init_tiny(jax.random.key(seed))
    states = np.random.default_rng(seed).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(apply_tiny(params, jnp.asarray(states))), forward_np(to_np64(params), states),
                               atol=1e-5, err_msg=f"seed {seed}")


_sensitivity = jax.jit(output_sensitivity, static_argnames=("apply_actor", "reduce"))


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_output_sensitivity_matches_finite_differences(reduce):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    params = _init_tiny(jax.random.key(seed))
    params = {**params, "lnorm1": {"gamma": jnp.asarray(rng.uniform(0.5, 1.5, 4), jnp.float32),
                                   "beta": jnp.asarray(rng.normal(0, 0.3, 4), jnp.float32)}}
    states = rng.normal(size=(5, 3)).astype(np.float32)
    # 3 extra garbage rows that the mask must drop
    padded = np.concatenate([states, 100 * rng.normal(size=(3, 3)).astype(np.float32)])
    valid = np.arange(8) < 5
    got = _sensitivity(params, jnp.asarray(padded), jnp.asarray(valid), apply_actor=apply_tiny, reduce=reduce)
    raw = fd_raw_sensitivity(params, states)
    assert set(got) == {"w_l1", "w_l2", "w_out"}
    for layer, sens in raw.items():
        want = clamp(sens / 5 if reduce == "mean" else sens)
        g = np.asarray(got[layer]["kernel"])
        assert g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=2e-3, atol=2e-5, err_msg=f"seed {seed} layer {layer} ({reduce})")
    # the test has teeth: most entries are not clamped
    assert np.mean(np.concatenate([s.ravel() for s in raw.values()]) > 0.05) > 0.5, seed


def test_output_sensitivity_clamps():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    params = _init_tiny(jax.random.key(seed))
    states = rng.normal(size=(5, 3)).astype(np.float32)
    states[:, 0] = 0.0  # input 0 never reaches the net: its kernel row has exactly zero gradient
    states[:, 1] = 1e-7  # input 1 is tiny: gradient << 0.01
    valid = jnp.ones(5, bool)
    sens = _sensitivity(params, jnp.asarray(states), valid, apply_actor=apply_tiny, reduce="sum")
    w1 = np.asarray(sens["w_l1"]["kernel"])
    np.testing.assert_array_equal(w1[0], 1.0, err_msg=f"seed {seed}")  # exact 0 -> 1
    np.testing.assert_array_equal(w1[1], np.float32(0.01), err_msg=f"seed {seed}")  # < 0.01 -> 0.01
    raw = fd_raw_sensitivity(params, states)["w_l1"][2]
    np.testing.assert_allclose(w1[2], clamp(raw), rtol=2e-3, atol=2e-5, err_msg=f"seed {seed}")

    # LN gamma = 0 in the second layer cuts every path from the first two kernels to the output.
    cut = {**params, "lnorm2": {"gamma": jnp.zeros(4), "beta": jnp.asarray(rng.normal(size=4), jnp.float32)}}
    sens = _sensitivity(cut, jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), valid, apply_actor=apply_tiny,
                        reduce="sum")
    np.testing.assert_array_equal(np.asarray(sens["w_l1"]["kernel"]), 1.0)
    np.testing.assert_array_equal(np.asarray(sens["w_l2"]["kernel"]), 1.0)
    assert np.all(np.asarray(sens["w_out"]["kernel"]) != 1.0), seed


# --------------------------------------------------------------------------------------------
# Proximal mutation


def constant_memory(rng, state, count, capacity=512):
    """A memory holding `count` transitions (count <= capacity) whose states are all `state`."""
    obs = state.shape[0]
    pad = lambda x: np.concatenate([x, np.zeros((capacity - count,) + x.shape[1:], np.float32)]).astype(np.float32)
    data = Transition(
        state=pad(np.tile(state, (count, 1))), action=pad(rng.normal(size=(count, 6))),
        next_state=pad(rng.normal(size=(count, obs))), reward=pad(rng.normal(size=count)),
        done=np.zeros(capacity, np.float32), truncated=np.zeros(capacity, np.float32),
    )
    return RingBuffer(data=data, position=np.int32(count % capacity), size=np.int32(count))


_proximal = jax.jit(lambda key, params, memory, config: proximal_mutation(key, params, memory, apply_official, config))


@pytest.mark.parametrize("memory_size", [300, 100])
def test_proximal_mutation_statistics(memory_size):
    """delta * sensitivity / sigma ~ N(0, 1) on the weight matrices; B = min(256, |memory|)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    params = _init_official(jax.random.key(seed))
    state = rng.normal(size=OFFICIAL_OBS).astype(np.float32)
    memory = constant_memory(rng, state, memory_size)
    sigma = 0.1
    config = EvolutionConfig(mutation_sigma=sigma)
    mutated = _proximal(jax.random.key(seed + 1), params, memory, config)

    batch = min(256, memory_size)
    sens = _sensitivity(params, jnp.asarray(np.tile(state, (batch, 1))), jnp.ones(batch, bool),
                        apply_actor=apply_official, reduce="sum")
    z = []
    for layer in params:
        for leaf in params[layer]:
            old, new = np.asarray(params[layer][leaf]), np.asarray(mutated[layer][leaf])
            if leaf != "kernel":
                np.testing.assert_array_equal(new, old, err_msg=f"seed {seed}: {layer}.{leaf} changed")
                continue
            zl = (new.astype(np.float64) - old) * np.asarray(sens[layer]["kernel"], np.float64) / sigma
            # per layer: roughly standard normal
            tol = 6 / math.sqrt(zl.size)
            assert abs(zl.mean()) < tol and abs(zl.std() - 1) < 1.5 * tol, (seed, layer, zl.mean(), zl.std())
            z.append(zl.ravel())
    z = np.concatenate(z)
    assert z.size == 17 * 128 + 128 * 128 + 128 * 6
    assert abs(z.mean()) < 0.04, (seed, z.mean())
    assert abs(z.std() - 1) < 0.03, (seed, z.std())
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.02, (seed, np.mean(np.abs(z) < 1))
    # the memory is not consumed or modified
    assert int(memory.size) == memory_size


def test_proximal_mutation_zero_sigma_is_identity():
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    params = _init_official(jax.random.key(seed))
    memory = constant_memory(rng, rng.normal(size=OFFICIAL_OBS).astype(np.float32), 50)
    mutated = _proximal(jax.random.key(seed), params, memory, EvolutionConfig(mutation_sigma=0.0))
    for (name, a), (_, b) in zip(leaves_with_names(params), leaves_with_names(mutated)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"seed {seed} {name}")


def test_proximal_mutation_sigma_noise():
    """With mutation_sigma_noise the step size varies from call to call (sigma ~ N(sigma, noise^2))."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    params = _init_official(jax.random.key(seed))
    state = rng.normal(size=OFFICIAL_OBS).astype(np.float32)
    memory = constant_memory(rng, state, 256)
    sens = _sensitivity(params, jnp.asarray(np.tile(state, (256, 1))), jnp.ones(256, bool),
                        apply_actor=apply_official, reduce="sum")
    keys = jax.random.split(jax.random.key(seed + 1), 40)

    w = lambda tree: np.asarray(tree["w_l2"]["kernel"], np.float64)

    def scales(config):  # per call: |sigma_drawn| / 0.1
        return np.array([np.std((w(_proximal(k, params, memory, config)) - w(params)) * w(sens) / 0.1) for k in keys])

    fixed = scales(EvolutionConfig(mutation_sigma=0.1))
    noisy = scales(EvolutionConfig(mutation_sigma=0.1, mutation_sigma_noise=0.03))
    assert np.all(np.abs(fixed - 1) < 0.05), (seed, fixed)
    assert 0.12 < noisy.std() < 0.5, (seed, noisy)  # expected 0.3
    assert abs(noisy.mean() - 1) < 0.25, (seed, noisy)


# --------------------------------------------------------------------------------------------
# Gaussian mutation

NUM_DRAWS = 400
# one draw per key, in sequence (much faster on CPU than vmapping the sequential event loop)
_gaussian_many = jax.jit(lambda keys, params, config: jax.lax.map(lambda k: gaussian_mutation(k, params, config), keys))


def _kernel_changes(params, mutated):
    """Per kernel: (old [size], new [draws, size]) flattened."""
    out = {}
    for layer in params:
        for leaf in params[layer]:
            old, new = np.asarray(params[layer][leaf]), np.asarray(mutated[layer][leaf])
            if leaf != "kernel":
                assert np.array_equal(new, np.broadcast_to(old, new.shape)), f"{layer}.{leaf} changed"
                continue
            out[layer] = (old.reshape(-1).astype(np.float64), new.reshape(new.shape[0], -1).astype(np.float64))
    return out


@pytest.fixture(scope="module")
def official_params():
    seed = fresh_seed()
    return seed, _init_official(jax.random.key(seed))


def test_gaussian_mutation_default_statistics(official_params):
    pseed, params = official_params
    seed = fresh_seed()
    mutated = _gaussian_many(jax.random.split(jax.random.key(seed), NUM_DRAWS), params, EvolutionConfig())
    changes = _kernel_changes(params, mutated)
    assert set(changes) == {"w_l1", "w_l2", "w_out"}
    msg = f"seeds {pseed}/{seed}"

    expected_fraction, touched_matrices, ratios = [], 0, []
    for layer, (old, new) in changes.items():
        size = old.size
        m = math.ceil(0.1 * size)
        changed = new != old[None]
        counts = changed.sum(axis=1)
        assert counts.max() <= m - 1, (msg, layer, counts.max(), m)  # n <= ceil(0.1 size) - 1
        expected_fraction.append(0.75 * (1 - 1 / m))  # the gate passes and n >= 1
        touched = counts > 0
        touched_matrices += touched.sum()
        # distinct positions among n ~ U{1..m-1} draws with replacement
        n = np.arange(1, m)
        expected_count = np.mean(size * (1 - (1 - 1 / size) ** n))
        se = counts[touched].std() / math.sqrt(touched.sum())
        assert abs(counts[touched].mean() - expected_count) < 5 * se + 1, (msg, layer, counts[touched].mean(),
                                                                           expected_count, se)
        ratios.append((np.abs(new - old[None]) / np.abs(old[None]))[changed])
    fraction = touched_matrices / (NUM_DRAWS * len(changes))
    assert abs(fraction - np.mean(expected_fraction)) < 0.06, (msg, fraction, np.mean(expected_fraction))

    r = np.concatenate(ratios)
    # normal (90 %): 0.1 |z|; super (5 %): 10 |z|; reset (5 %): |z - w| / |w|, mostly >> 1.
    # median: 0.9 P(0.1|z| < x) ~= 0.5 -> x ~= 0.0765
    assert 0.065 < np.median(r) < 0.09, (msg, np.median(r))
    big = np.mean(r > 3)  # super: 0.05 P(|z| > 0.3) = 0.038, reset: ~0.05 * 0.9
    assert 0.065 < big < 0.11, (msg, big)
    # normal mutations with |z| < 1: 0.9 * 0.6827 (positions hit twice shift this a little)
    assert abs(np.mean(r < 0.1) - 0.9 * 0.6827) < 0.025, (msg, np.mean(r < 0.1))


@pytest.mark.parametrize("kind", ["normal", "super", "reset"])
def test_gaussian_mutation_each_kind(official_params, kind):
    pseed, params = official_params
    seed = fresh_seed()
    probs = {"normal": (0.0, 0.0), "super": (1.0, 0.0), "reset": (0.0, 1.0)}[kind]
    config = EvolutionConfig(super_mutation_prob=probs[0], reset_prob=probs[1])
    mutated = _gaussian_many(jax.random.split(jax.random.key(seed), NUM_DRAWS), params, config)
    olds, news = [], []
    for old, new in _kernel_changes(params, mutated).values():
        changed = new != old[None]
        olds.append(np.broadcast_to(old, new.shape)[changed])
        news.append(new[changed])
    old, new = np.concatenate(olds), np.concatenate(news)
    msg = f"seeds {pseed}/{seed} ({kind})"
    assert old.size > 10_000, msg
    if kind == "reset":  # new value ~ N(0, 1), independent of the old one
        assert abs(new.mean()) < 0.03 and abs(new.std() - 1) < 0.03, (msg, new.mean(), new.std())
        assert abs(np.corrcoef(old, new)[0, 1]) < 0.03, msg
    else:  # w + N(0, (s w)^2): relative change s |z|. About 5 % of the changed positions are
        # hit twice (draws with replacement), which makes their change larger: hence the
        # slightly asymmetric bounds around the half-normal's median 0.6745 and P(|z| < 1).
        strength = 0.1 if kind == "normal" else 10.0
        rel = np.abs(new - old) / np.abs(old) / strength
        assert 0.66 < np.median(rel) < 0.73, (msg, np.median(rel))
        assert 0.63 < np.mean(rel < 1) < 0.695, (msg, np.mean(rel < 1))
        assert abs(np.mean(new > old) - 0.5) < 0.02, msg


def test_gaussian_mutation_clips(official_params):
    pseed, params = official_params
    seed = fresh_seed()
    big = jax.tree.map(lambda x: np.full(x.shape, 5e5, np.float32), params)
    config = EvolutionConfig(super_mutation_prob=1.0, reset_prob=0.0)  # w + N(0, (10 w)^2): |w'| mostly > 1e6
    mutated = _gaussian_many(jax.random.split(jax.random.key(seed), NUM_DRAWS), big, config)
    values = np.concatenate([np.asarray(leaves["kernel"]).ravel() for leaves in mutated.values() if "kernel" in leaves])
    changed = values != 5e5
    assert changed.sum() > 1000, (pseed, seed)
    assert np.all(np.abs(values) <= 1e6), (pseed, seed)
    assert np.mean(np.abs(values[changed]) == 1e6) > 0.5, (pseed, seed)
    assert np.any(values == 1e6) and np.any(values == -1e6), (pseed, seed)


def test_gaussian_mutation_event_bound():
    """n ~ U{0..ceil(0.1 size) - 1}: a matrix of at most 10 entries is never mutated, one of 11
    gets at most one event, one of 21 at most two."""
    rng = np.random.default_rng(fresh_seed())
    params = {name: {"kernel": rng.uniform(0.5, 1.0, shape).astype(np.float32)}
              for name, shape in (("a", (2, 5)), ("b", (11, 1)), ("c", (3, 7)))}
    mutated = _gaussian_many(jax.random.split(jax.random.key(fresh_seed()), NUM_DRAWS), params, EvolutionConfig())
    changed = {name: (np.asarray(mutated[name]["kernel"]) != params[name]["kernel"][None]).reshape(NUM_DRAWS, -1).sum(1)
               for name in params}
    assert changed["a"].max() == 0, np.bincount(changed["a"])
    for name, m in (("b", 2), ("c", 3)):
        assert changed[name].max() <= m - 1 and np.mean(changed[name] > 0) > 0.2, (name, np.bincount(changed[name]))

