"""Tests for the official PDERL/ERL networks (pderl_jax.networks).

Forward passes are checked against an independent float64 NumPy re-implementation of the
official PyTorch code (core/ddpg.py), on fresh random parameters and inputs every run. Each
assertion message carries the NumPy seed so a failure can be reproduced.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.config import NetworkConfig
from pderl_jax.networks import (
    OfficialLayerNorm,
    apply_actor,
    apply_critic,
    count_params,
    from_torch_state_dict,
    init_actor,
    init_critic,
    init_population,
    make_actor,
    make_critic,
    normalize_unbiased,
    to_torch_state_dict,
    weight_matrix_mask,
)

RTOL = 1e-5
ATOL = 1e-5

ACTOR_KEYS = [
    "w_l1.weight", "w_l1.bias", "lnorm1.gamma", "lnorm1.beta",
    "w_l2.weight", "w_l2.bias", "lnorm2.gamma", "lnorm2.beta",
    "w_out.weight", "w_out.bias",
]
CRITIC_KEYS = [
    "w_state_l1.weight", "w_state_l1.bias", "w_action_l1.weight", "w_action_l1.bias",
    "w_l2.weight", "w_l2.bias", "lnorm2.gamma", "lnorm2.beta",
    "w_out.weight", "w_out.bias",
]

# (task, obs_dim, action_dim, actor total, actor weight matrices only, critic total) — official.
OFFICIAL_COUNTS = [
    ("halfcheetah", 17, 6, 20102, 19328, 126201),
    ("hopper", 11, 3, 18947, 18176, 124401),
    ("swimmer", 8, 2, 18434, 17664, 123601),
    ("ant", 111, 8, 32392, 31616, 145401),
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class _Seeded:
    """A NumPy generator that remembers its seed (for assertion messages) and makes JAX keys."""

    def __init__(self, seed):
        self.gen = np.random.default_rng(seed)
        self.seed = seed
        self.seed_msg = f"numpy seed={seed}"

    def key(self):
        return jax.random.key(int(self.gen.integers(0, 2**31 - 1)))

    def __getattr__(self, name):
        return getattr(self.gen, name)


@pytest.fixture
def rng():
    """A freshly seeded generator per test; `rng.seed_msg` names the seed."""
    return _Seeded(int(np.random.SeedSequence().entropy % (2**63)))


def f64(x):
    return np.asarray(x, dtype=np.float64)


def random_params_like(params, rng):
    """Fresh float32 NumPy values for every leaf of a params tree (only shapes are used).

    Kernels ~ N(0, (1.5/sqrt(fan_in))^2) so that pre-activations are O(1) (no tanh saturation
    hiding errors); biases ~ N(0, 0.5^2); LN gamma ~ N(1, 0.5^2), beta ~ N(0, 0.5^2).
    The dict order of `params` is kept.
    """
    out = {}
    for layer, leaves in params.items():
        out[layer] = {}
        for leaf, value in leaves.items():
            shape = tuple(value.shape)
            if leaf == "kernel":
                x = rng.normal(0.0, 1.5 / math.sqrt(shape[-2]), shape)
            elif leaf == "gamma":
                x = rng.normal(1.0, 0.5, shape)
            else:  # bias, beta
                x = rng.normal(0.0, 0.5, shape)
            out[layer][leaf] = x.astype(np.float32)
    return out


def np_official_layer_norm(x, gamma, beta, eps=1e-6):
    """core/ddpg.py::LayerNorm: gamma * (x - mean) / (std_unbiased + eps) + beta."""
    x = f64(x)
    mean = x.mean(-1, keepdims=True)
    std = x.std(-1, ddof=1, keepdims=True)
    return f64(gamma) * (x - mean) / (std + eps) + f64(beta)


def np_standard_layer_norm(x, gamma, beta, eps=1e-6):
    """Standard (torch/flax) LayerNorm: biased variance, eps inside the sqrt."""
    x = f64(x)
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return f64(gamma) * (x - mean) / np.sqrt(var + eps) + f64(beta)


def np_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def np_actor(p, s, num_hidden=2, use_ln=True):
    h = f64(s)
    for i in range(1, num_hidden + 1):
        h = h @ f64(p[f"w_l{i}"]["kernel"]) + f64(p[f"w_l{i}"]["bias"])
        if use_ln:
            h = np_official_layer_norm(h, p[f"lnorm{i}"]["gamma"], p[f"lnorm{i}"]["beta"])
        h = np.tanh(h)
    return np.tanh(h @ f64(p["w_out"]["kernel"]) + f64(p["w_out"]["bias"]))


def np_critic(p, s, a, use_ln=True):
    hs = np_elu(f64(s) @ f64(p["w_state_l1"]["kernel"]) + f64(p["w_state_l1"]["bias"]))
    ha = np_elu(f64(a) @ f64(p["w_action_l1"]["kernel"]) + f64(p["w_action_l1"]["bias"]))
    h = np.concatenate([hs, ha], axis=-1) @ f64(p["w_l2"]["kernel"]) + f64(p["w_l2"]["bias"])
    if use_ln:
        h = np_official_layer_norm(h, p["lnorm2"]["gamma"], p["lnorm2"]["beta"])
    h = np_elu(h)
    return (h @ f64(p["w_out"]["kernel"]) + f64(p["w_out"]["bias"]))[..., 0]


def np_linear_torch(x, sd, name):
    """PyTorch nn.Linear on a torch-layout state dict: y = x W^T + b."""
    return x @ f64(sd[f"{name}.weight"]).T + f64(sd[f"{name}.bias"])


def np_actor_from_state_dict(sd, s):
    h = f64(s)
    for i in (1, 2):
        h = np_linear_torch(h, sd, f"w_l{i}")
        h = np.tanh(np_official_layer_norm(h, sd[f"lnorm{i}.gamma"], sd[f"lnorm{i}.beta"]))
    return np.tanh(np_linear_torch(h, sd, "w_out"))


def np_critic_from_state_dict(sd, s, a):
    hs = np_elu(np_linear_torch(f64(s), sd, "w_state_l1"))
    ha = np_elu(np_linear_torch(f64(a), sd, "w_action_l1"))
    h = np_linear_torch(np.concatenate([hs, ha], -1), sd, "w_l2")
    h = np_elu(np_official_layer_norm(h, sd["lnorm2.gamma"], sd["lnorm2.beta"]))
    return np_linear_torch(h, sd, "w_out")[..., 0]


def run_f32(fn, *args):
    """Run a JAX computation at full float32 matmul precision (no TF32/bf16 passes on GPU)."""
    with jax.default_matmul_precision("float32"):
        return np.asarray(fn(*args))


def flat_items(params):
    """[(layer, leaf, value)] in the tree's dict order."""
    return [(layer, leaf, v) for layer, leaves in params.items() for leaf, v in leaves.items()]


# Compiling is what costs time here: every network configuration gets one jitted init and one
# jitted apply (cached), and parameter templates for the forward tests come from `eval_shape`.


@functools.lru_cache(maxsize=None)
def actor_fns(action_dim, obs_dim, rl=False, hidden=(128, 128), use_ln=True):
    actor = make_actor(action_dim, NetworkConfig(actor_hidden=hidden, use_layer_norm=use_ln), rl=rl)
    init = jax.jit(lambda k: init_actor(k, actor, obs_dim))
    return SimpleNamespace(
        module=actor,
        init=init,
        apply=jax.jit(lambda p, s: apply_actor(actor, p, s)),
        shapes=jax.eval_shape(init, jax.random.key(0)),
    )


@functools.lru_cache(maxsize=None)
def critic_fns(obs_dim, action_dim, twin=False, use_ln=True):
    critic = make_critic(NetworkConfig(use_layer_norm=use_ln), twin=twin)
    init = jax.jit(lambda k: init_critic(k, critic, obs_dim, action_dim))
    return SimpleNamespace(
        module=critic,
        init=init,
        apply=jax.jit(lambda p, s, a: apply_critic(critic, p, s, a)),
        shapes=jax.eval_shape(init, jax.random.key(0)),
    )


@functools.lru_cache(maxsize=None)
def creation_ordered_params(kind):
    """HalfCheetah-sized params in exactly the dict order a plain (un-jitted) init returns.

    jit/eval_shape outputs come back with sorted dict keys, so the order flax creates the
    parameters in is recorded while the package's init function is traced (nothing compiles).
    Values are zeros: the users of this template only care about names, order and shapes.
    """
    order = []

    def init(key):
        if kind == "actor":
            params = init_actor(key, make_actor(6), 17)
        else:
            params = init_critic(key, make_critic(), 17, 6)
        order.append([(layer, list(leaves)) for layer, leaves in params.items()])
        return params

    shapes = jax.eval_shape(init, jax.random.key(0))
    return {
        layer: {leaf: np.zeros(shapes[layer][leaf].shape, np.float32) for leaf in leaves}
        for layer, leaves in order[0]
    }


# --------------------------------------------------------------------------------------------
# forward passes vs NumPy
# --------------------------------------------------------------------------------------------

# HalfCheetah with three batch shapes, Ant (largest input) with one; one compile per case.
ACTOR_CASES = [(17, 6, (5,)), (17, 6, ()), (17, 6, (2, 3)), (111, 8, (5,))]


@pytest.mark.parametrize("obs_dim,action_dim,batch_shape", ACTOR_CASES)
def test_actor_forward_matches_numpy(rng, obs_dim, action_dim, batch_shape):
    fns = actor_fns(action_dim, obs_dim)
    params = random_params_like(fns.shapes, rng)
    states = rng.normal(0.0, 1.0, (*batch_shape, obs_dim)).astype(np.float32)
    got = run_f32(fns.apply, params, states)
    want = np_actor(params, states)
    assert got.shape == (*batch_shape, action_dim), rng.seed_msg
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=rng.seed_msg)
    # The outputs are not saturated at +-1, so the comparison is informative.
    assert np.abs(want).max() < 0.9999 and np.std(want) > 1e-2, rng.seed_msg


@pytest.mark.parametrize("hidden,use_ln", [((64,), True), ((32, 48, 16), True), ((128, 128), False)])
def test_actor_forward_other_architectures(rng, hidden, use_ln):
    fns = actor_fns(4, 9, hidden=hidden, use_ln=use_ln)
    expected_layers = [f"w_l{i}" for i in range(1, len(hidden) + 1)] + ["w_out"]
    if use_ln:
        expected_layers += [f"lnorm{i}" for i in range(1, len(hidden) + 1)]
    assert sorted(fns.shapes) == sorted(expected_layers)
    params = random_params_like(fns.shapes, rng)
    states = rng.normal(0.0, 1.0, (6, 9)).astype(np.float32)
    got = run_f32(fns.apply, params, states)
    want = np_actor(params, states, num_hidden=len(hidden), use_ln=use_ln)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=rng.seed_msg)


def test_rl_actor_forward_matches_numpy(rng):
    fns = actor_fns(6, 17, rl=True)
    params = random_params_like(fns.shapes, rng)
    states = rng.normal(0.0, 1.0, (5, 17)).astype(np.float32)
    got = run_f32(fns.apply, params, states)
    np.testing.assert_allclose(got, np_actor(params, states), rtol=RTOL, atol=ATOL, err_msg=rng.seed_msg)


CRITIC_CASES = [(17, 6, (5,)), (17, 6, ()), (17, 6, (2, 3)), (11, 3, (5,)), (111, 8, (5,))]


@pytest.mark.parametrize("obs_dim,action_dim,batch_shape", CRITIC_CASES)
def test_critic_forward_matches_numpy(rng, obs_dim, action_dim, batch_shape):
    fns = critic_fns(obs_dim, action_dim)
    params = random_params_like(fns.shapes, rng)
    states = rng.normal(0.0, 1.0, (*batch_shape, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (*batch_shape, action_dim)).astype(np.float32)
    got = run_f32(fns.apply, params, states, actions)
    want = np_critic(params, states, actions)
    assert got.shape == batch_shape, rng.seed_msg
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=rng.seed_msg)
    if batch_shape:
        assert np.std(want) > 1e-2, rng.seed_msg


def test_critic_forward_without_layer_norm(rng):
    fns = critic_fns(5, 2, use_ln=False)
    assert "lnorm2" not in fns.shapes
    params = random_params_like(fns.shapes, rng)
    states = rng.normal(0.0, 1.0, (4, 5)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (4, 2)).astype(np.float32)
    got = run_f32(fns.apply, params, states, actions)
    np.testing.assert_allclose(got, np_critic(params, states, actions, use_ln=False), rtol=RTOL, atol=ATOL,
                               err_msg=rng.seed_msg)


def test_twin_critic_heads_match_two_numpy_critics(rng):
    obs_dim, action_dim, batch = 17, 6, 6
    fns = critic_fns(obs_dim, action_dim, twin=True)
    init = fns.init(rng.key())
    assert list(init) == ["critics"]
    # Heads are initialised independently.
    for layer, leaf, value in flat_items(init["critics"]):
        assert value.shape[0] == 2, (layer, leaf)
        if leaf in ("kernel", "bias"):
            assert not np.array_equal(value[0], value[1]), (layer, leaf, rng.seed_msg)

    head_like = critic_fns(obs_dim, action_dim).shapes
    heads = [random_params_like(head_like, rng) for _ in range(2)]
    params = {"critics": jax.tree.map(lambda a, b: np.stack([a, b]), heads[0], heads[1])}
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, init)
    states = rng.normal(0.0, 1.0, (batch, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (batch, action_dim)).astype(np.float32)
    got = run_f32(fns.apply, params, states, actions)
    assert got.shape == (2, batch), rng.seed_msg
    for i in range(2):
        np.testing.assert_allclose(got[i], np_critic(heads[i], states, actions), rtol=RTOL, atol=ATOL,
                                   err_msg=f"head {i}, {rng.seed_msg}")
    assert not np.allclose(got[0], got[1]), rng.seed_msg


# --------------------------------------------------------------------------------------------
# the custom LayerNorm
# --------------------------------------------------------------------------------------------

_official_ln = jax.jit(lambda p, x: OfficialLayerNorm().apply({"params": p}, x))
_flax_ln = jax.jit(lambda p, x: nn.LayerNorm(epsilon=1e-6).apply({"params": p}, x))


def _apply_ln(x, gamma, beta):
    return run_f32(_official_ln, {"gamma": gamma, "beta": beta}, x)


@pytest.mark.parametrize("features", [2, 7, 300])
def test_official_layer_norm_matches_numpy(rng, features):
    x = (rng.normal(0.0, 3.0, (4, features)) + rng.normal(0.0, 5.0, (4, 1))).astype(np.float32)
    gamma = rng.normal(1.0, 0.5, features).astype(np.float32)
    beta = rng.normal(0.0, 0.5, features).astype(np.float32)
    np.testing.assert_allclose(_apply_ln(x, gamma, beta), np_official_layer_norm(x, gamma, beta),
                               rtol=RTOL, atol=ATOL, err_msg=rng.seed_msg)
    np.testing.assert_allclose(run_f32(jax.jit(normalize_unbiased), x), np_official_layer_norm(x, 1.0, 0.0),
                               rtol=RTOL, atol=ATOL, err_msg=rng.seed_msg)


def test_official_layer_norm_eps_outside_sqrt(rng):
    """With a tiny spread (std ~ 1e-5) eps=1e-6 outside the sqrt matters a lot: standard LN gives
    (x - mu)/sqrt(var + 1e-6) ~ 1e-2, the official one (x - mu)/(std + 1e-6) ~ 1."""
    features = 64
    x = (rng.normal(0.0, 1e-5, (3, features)) + rng.normal(0.0, 1e-3, (3, 1))).astype(np.float32)
    gamma = np.ones(features, np.float32)
    beta = np.zeros(features, np.float32)
    got = _apply_ln(x, gamma, beta)
    want = np_official_layer_norm(x, gamma, beta)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3, err_msg=rng.seed_msg)
    # eps inside the sqrt (even with the unbiased variance) would be far off
    x64 = f64(x)
    centred = x64 - x64.mean(-1, keepdims=True)
    eps_inside = centred / np.sqrt(x64.var(-1, ddof=1, keepdims=True) + 1e-6)
    assert np.abs(got - eps_inside).max() > 0.5, rng.seed_msg


def test_official_layer_norm_differs_from_standard_layer_norm(rng):
    """Fails if the custom LN is replaced by flax's (biased variance, eps inside the sqrt)."""
    features = 128
    x = rng.normal(0.0, 2.0, (8, features)).astype(np.float32)
    gamma = rng.normal(1.0, 0.3, features).astype(np.float32)
    beta = rng.normal(0.0, 0.3, features).astype(np.float32)
    official = _apply_ln(x, gamma, beta)
    standard = run_f32(_flax_ln, {"scale": gamma, "bias": beta}, x)
    np.testing.assert_allclose(standard, np_standard_layer_norm(x, gamma, beta), rtol=1e-4, atol=1e-4,
                               err_msg=rng.seed_msg)
    # Unbiased vs biased std: the normalised part shrinks by sqrt((F-1)/F) ~ 0.9961 for F=128.
    ratio = (f64(official) - beta) / (f64(standard) - beta)
    np.testing.assert_allclose(ratio, math.sqrt((features - 1) / features), rtol=1e-3, err_msg=rng.seed_msg)
    assert np.abs(official - standard).max() > 1e-3, rng.seed_msg


def test_actor_differs_from_actor_with_standard_layer_norm(rng):
    """The actor-level reference distinguishes the two LNs by far more than the tolerance."""
    fns = actor_fns(6, 17)
    params = random_params_like(fns.shapes, rng)
    states = rng.normal(0.0, 1.0, (16, 17)).astype(np.float32)
    got = run_f32(fns.apply, params, states)
    h = f64(states)
    for i in (1, 2):
        h = h @ f64(params[f"w_l{i}"]["kernel"]) + f64(params[f"w_l{i}"]["bias"])
        h = np.tanh(np_standard_layer_norm(h, params[f"lnorm{i}"]["gamma"], params[f"lnorm{i}"]["beta"]))
    standard = np.tanh(h @ f64(params["w_out"]["kernel"]) + f64(params["w_out"]["bias"]))
    assert np.abs(got - standard).max() > 20 * ATOL, rng.seed_msg


# --------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task,obs_dim,action_dim,actor_total,actor_weights,critic_total", OFFICIAL_COUNTS)
def test_official_parameter_counts(task, obs_dim, action_dim, actor_total, actor_weights, critic_total):
    # Shapes only (eval_shape): the counts depend on nothing else.
    actor_shapes = actor_fns(action_dim, obs_dim).shapes
    assert count_params(actor_shapes) == actor_total, task
    assert count_params(actor_shapes, weights_only=True) == actor_weights, task
    rl_shapes = actor_fns(action_dim, obs_dim, rl=True).shapes
    assert count_params(rl_shapes) == actor_total, task
    assert count_params(rl_shapes, weights_only=True) == actor_weights, task
    critic_shapes = critic_fns(obs_dim, action_dim).shapes
    assert count_params(critic_shapes) == critic_total, task
    # independent cross-check of count_params itself
    assert sum(math.prod(x.shape) for x in jax.tree.leaves(actor_shapes)) == actor_total, task
    assert sum(math.prod(v.shape) for _, leaf, v in flat_items(actor_shapes) if leaf == "kernel") == actor_weights


def test_parameter_counts_on_real_params(rng):
    actor = actor_fns(6, 17).init(rng.key())
    assert count_params(actor) == 20102
    assert count_params(actor, weights_only=True) == 19328
    critic = critic_fns(17, 6).init(rng.key())
    assert count_params(critic) == 126201
    assert count_params(critic, weights_only=True) == 17 * 200 + 6 * 200 + 400 * 300 + 300


def check_torch_uniform(x, bound, what, seed_msg):
    """x ~ U(-bound, bound): inside the bound; for large tensors also close to it and uniform-like."""
    x = f64(x).ravel()
    assert np.all(np.abs(x) <= bound * (1 + 1e-6)), f"{what}: max |x| {np.abs(x).max()} > {bound}; {seed_msg}"
    n = x.size
    if n >= 100:  # P(max|x| < 0.9 b) = 0.9^n < 3e-5
        assert np.abs(x).max() > 0.9 * bound, f"{what}: max |x| {np.abs(x).max()} << {bound}; {seed_msg}"
    if n >= 1000:  # moments of U(-b, b): mean 0, E x^2 = b^2/3 (rel. sd of the estimate sqrt(0.8/n))
        assert abs(x.mean()) < 6 * bound / math.sqrt(3 * n), f"{what}: mean {x.mean()}; {seed_msg}"
        var = np.mean(x * x)
        assert abs(var / (bound**2 / 3) - 1) < 7 * math.sqrt(0.8 / n), f"{what}: E x^2 {var}; {seed_msg}"


@pytest.mark.parametrize("obs_dim,action_dim", [(17, 6)])
@pytest.mark.parametrize("rl", [False, True])
def test_actor_init_distribution(rng, obs_dim, action_dim, rl):
    params = actor_fns(action_dim, obs_dim, rl=rl).init(rng.key())
    fan_in = {"w_l1": obs_dim, "w_l2": 128, "w_out": 128}
    shapes = {"w_l1": (obs_dim, 128), "w_l2": (128, 128), "w_out": (128, action_dim)}
    for layer in ("w_l1", "w_l2", "w_out"):
        scale = 0.1 if (rl and layer == "w_out") else 1.0
        bound = scale / math.sqrt(fan_in[layer])
        assert params[layer]["kernel"].shape == shapes[layer]
        assert params[layer]["bias"].shape == shapes[layer][1:]
        assert params[layer]["kernel"].dtype == jnp.float32
        # Kernels and biases share the kernel's fan-in bound (PyTorch default Linear init).
        check_torch_uniform(params[layer]["kernel"], bound, f"{layer}.kernel (rl={rl})", rng.seed_msg)
        check_torch_uniform(params[layer]["bias"], bound, f"{layer}.bias (rl={rl})", rng.seed_msg)
    for ln in ("lnorm1", "lnorm2"):
        np.testing.assert_array_equal(params[ln]["gamma"], np.ones(128), err_msg=rng.seed_msg)
        np.testing.assert_array_equal(params[ln]["beta"], np.zeros(128), err_msg=rng.seed_msg)


def test_rl_actor_output_layer_is_scaled_down(rng):
    """RL actor: the output layer's bound is 0.1/sqrt(128) and actually reached (not just inside)."""
    rl = actor_fns(6, 17, rl=True).init(rng.key())
    kernel = np.abs(np.asarray(rl["w_out"]["kernel"]))
    assert kernel.max() <= 0.1 / math.sqrt(128) * (1 + 1e-6), rng.seed_msg
    assert kernel.max() > 0.09 / math.sqrt(128), rng.seed_msg
    pop = actor_fns(6, 17).init(rng.key())
    assert np.abs(np.asarray(pop["w_out"]["kernel"])).max() > 0.9 / math.sqrt(128), rng.seed_msg


@pytest.mark.parametrize("obs_dim,action_dim", [(17, 6)])
def test_critic_init_distribution(rng, obs_dim, action_dim):
    params = critic_fns(obs_dim, action_dim).init(rng.key())
    spec = {  # layer: (fan_in, out, scale)
        "w_state_l1": (obs_dim, 200, 1.0),
        "w_action_l1": (action_dim, 200, 1.0),
        "w_l2": (400, 300, 1.0),
        "w_out": (300, 1, 0.1),
    }
    assert sorted(params) == sorted([*spec, "lnorm2"])
    for layer, (fan_in, out, scale) in spec.items():
        assert params[layer]["kernel"].shape == (fan_in, out)
        assert params[layer]["bias"].shape == (out,)
        bound = scale / math.sqrt(fan_in)
        check_torch_uniform(params[layer]["kernel"], bound, f"{layer}.kernel", rng.seed_msg)
        check_torch_uniform(params[layer]["bias"], bound, f"{layer}.bias", rng.seed_msg)
    np.testing.assert_array_equal(params["lnorm2"]["gamma"], np.ones(300))
    np.testing.assert_array_equal(params["lnorm2"]["beta"], np.zeros(300))


def test_twin_critic_init_distribution(rng):
    params = critic_fns(17, 6, twin=True).init(rng.key())["critics"]
    for i in range(2):
        check_torch_uniform(params["w_l2"]["kernel"][i], 1 / math.sqrt(400), f"head {i} w_l2", rng.seed_msg)
        check_torch_uniform(params["w_out"]["kernel"][i], 0.1 / math.sqrt(300), f"head {i} w_out", rng.seed_msg)


def test_init_depends_on_key(rng):
    init = actor_fns(6, 17).init
    key = rng.key()
    a, b, c = init(key), init(key), init(jax.random.fold_in(key, 1))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)  # exact: one init program, one key
    assert not np.array_equal(a["w_l1"]["kernel"], c["w_l1"]["kernel"]), rng.seed_msg


def test_init_population(rng):
    k, obs_dim, action_dim = 5, 17, 6
    fns = actor_fns(action_dim, obs_dim)
    pop = jax.jit(lambda key: init_population(key, fns.module, obs_dim, k))(rng.key())
    single = fns.shapes
    assert jax.tree.structure(pop) == jax.tree.structure(single)
    for layer, leaves in pop.items():
        for leaf, stacked in leaves.items():
            stacked = np.asarray(stacked)
            assert stacked.shape == (k, *single[layer][leaf].shape), (layer, leaf)
            if leaf in ("kernel", "bias"):
                for i in range(k):
                    for j in range(i + 1, k):
                        assert not np.array_equal(stacked[i], stacked[j]), (layer, leaf, i, j, rng.seed_msg)
                fan_in = single[layer]["kernel"].shape[0]
                for i in range(k):
                    check_torch_uniform(stacked[i], 1 / math.sqrt(fan_in), f"member {i} {layer}.{leaf}",
                                        rng.seed_msg)
            elif leaf == "gamma":
                np.testing.assert_array_equal(stacked, 1.0)
            else:
                np.testing.assert_array_equal(stacked, 0.0)
    # Every member is a usable actor: vmapped forward == NumPy forward of that member.
    states = rng.normal(0.0, 1.0, (3, obs_dim)).astype(np.float32)
    batched = run_f32(jax.jit(jax.vmap(fns.apply, in_axes=(0, None))), pop, states)
    assert batched.shape == (k, 3, action_dim)
    for i in range(k):
        member = jax.tree.map(lambda x: x[i], pop)
        np.testing.assert_allclose(batched[i], np_actor(member, states), rtol=RTOL, atol=ATOL,
                                   err_msg=f"member {i}, {rng.seed_msg}")
    assert not np.allclose(batched[0], batched[1]), rng.seed_msg


# --------------------------------------------------------------------------------------------
# weight mask
# --------------------------------------------------------------------------------------------


def _check_mask(params):
    mask = weight_matrix_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(jax.tree.map(lambda x: True, params))
    for layer, leaves in params.items():
        for leaf in leaves:
            assert mask[layer][leaf] is (leaf == "kernel"), (layer, leaf)


def test_weight_matrix_mask_actor_and_critic():
    actor_params = creation_ordered_params("actor")
    _check_mask(actor_params)
    # kernels are exactly the 2-D leaves of a single actor/critic (what the official code mutates)
    mask = weight_matrix_mask(actor_params)
    for layer, leaf, value in flat_items(actor_params):
        assert mask[layer][leaf] == (value.ndim == 2), (layer, leaf)
    assert sum(mask[layer][leaf] for layer, leaf, _ in flat_items(actor_params)) == 3
    _check_mask(creation_ordered_params("critic"))
    _check_mask(critic_fns(17, 6).shapes)
    # a stacked population: kernels are 3-D there, still masked by name
    pop = jax.eval_shape(lambda key: init_population(key, make_actor(6), 17, 3), jax.random.key(0))
    _check_mask(pop)
    _check_mask(actor_fns(3, 5, hidden=(16, 8, 4)).shapes)


def test_weight_matrix_mask_and_count_twin_critic():
    params = critic_fns(17, 6, twin=True).shapes
    assert count_params(params) == 2 * 126201
    mask = weight_matrix_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(jax.tree.map(lambda x: True, params))
    assert mask["critics"]["w_l2"]["kernel"] is True


# --------------------------------------------------------------------------------------------
# PyTorch state-dict layout
# --------------------------------------------------------------------------------------------


def test_actor_state_dict_layout(rng):
    obs_dim, action_dim = 17, 6
    template = creation_ordered_params("actor")  # flax creation order (plain, un-jitted init)
    assert list(to_torch_state_dict(template)) == ACTOR_KEYS
    params = random_params_like(template, rng)
    sd = to_torch_state_dict(params)
    assert list(sd.keys()) == ACTOR_KEYS
    shapes = {
        "w_l1.weight": (128, obs_dim), "w_l1.bias": (128,), "lnorm1.gamma": (128,), "lnorm1.beta": (128,),
        "w_l2.weight": (128, 128), "w_l2.bias": (128,), "lnorm2.gamma": (128,), "lnorm2.beta": (128,),
        "w_out.weight": (action_dim, 128), "w_out.bias": (action_dim,),
    }
    for name, value in sd.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32, name
        assert value.shape == shapes[name], name
        layer, leaf = name.split(".")
        if leaf == "weight":
            np.testing.assert_array_equal(value, np.asarray(params[layer]["kernel"]).T, err_msg=name)
        else:
            np.testing.assert_array_equal(value, np.asarray(params[layer][leaf]), err_msg=name)


def test_critic_state_dict_layout(rng):
    template = creation_ordered_params("critic")
    assert list(to_torch_state_dict(template)) == CRITIC_KEYS
    params = random_params_like(template, rng)
    sd = to_torch_state_dict(params)
    assert list(sd.keys()) == CRITIC_KEYS
    assert sd["w_state_l1.weight"].shape == (200, 17)
    assert sd["w_action_l1.weight"].shape == (200, 6)
    assert sd["w_l2.weight"].shape == (300, 400)
    assert sd["w_out.weight"].shape == (1, 300)
    assert sd["w_out.bias"].shape == (1,)
    for name, value in sd.items():
        layer, leaf = name.split(".")
        want = np.asarray(params[layer]["kernel"]).T if leaf == "weight" else np.asarray(params[layer][leaf])
        np.testing.assert_array_equal(value, want, err_msg=name)


def test_state_dict_order_after_jit_or_tree_transform(rng):
    assert list(to_torch_state_dict(actor_fns(6, 17).init(rng.key()))) == ACTOR_KEYS
    assert list(to_torch_state_dict(jax.tree.map(lambda x: x, creation_ordered_params("actor")))) == ACTOR_KEYS
    assert list(to_torch_state_dict(critic_fns(17, 6).init(rng.key()))) == CRITIC_KEYS


@pytest.mark.parametrize("kind", ["actor", "critic"])
def test_state_dict_round_trip_is_exact(rng, kind):
    params = random_params_like(creation_ordered_params(kind), rng)
    sd = to_torch_state_dict(params)
    back = from_torch_state_dict(sd, like=params)
    assert list(back) == list(params)
    for layer, leaves in params.items():
        assert list(back[layer]) == list(leaves), layer
        for leaf, value in leaves.items():
            assert back[layer][leaf].dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(back[layer][leaf]), value, err_msg=f"{layer}.{leaf}")
    sd2 = to_torch_state_dict(back)
    assert list(sd2) == list(sd)
    for name in sd:
        np.testing.assert_array_equal(sd2[name], sd[name], err_msg=name)
    # the state dict holds copies: writing into it leaves the params alone
    first_layer = next(iter(back))
    first_leaf = next(iter(back[first_layer]))
    before = np.array(back[first_layer][first_leaf])
    next(iter(sd2.values()))[...] = 123.0
    np.testing.assert_array_equal(np.asarray(back[first_layer][first_leaf]), before)


def test_numpy_forward_from_state_dict_matches_flax(rng):
    actor, critic = actor_fns(6, 17), critic_fns(17, 6)
    actor_params = random_params_like(creation_ordered_params("actor"), rng)
    critic_params = random_params_like(creation_ordered_params("critic"), rng)
    states = rng.normal(0.0, 1.0, (5, 17)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (5, 6)).astype(np.float32)

    actor_sd = to_torch_state_dict(actor_params)
    critic_sd = to_torch_state_dict(critic_params)
    got_a = run_f32(actor.apply, actor_params, states)
    np.testing.assert_allclose(got_a, np_actor_from_state_dict(actor_sd, states), rtol=RTOL, atol=ATOL,
                               err_msg=rng.seed_msg)
    got_q = run_f32(critic.apply, critic_params, states, actions)
    np.testing.assert_allclose(got_q, np_critic_from_state_dict(critic_sd, states, actions), rtol=RTOL,
                               atol=ATOL, err_msg=rng.seed_msg)

    # An "official" state dict made directly in torch layout loads and runs identically.
    torch_sd = {name: rng.normal(0.0, 0.3, v.shape).astype(np.float32) for name, v in actor_sd.items()}
    loaded = from_torch_state_dict(torch_sd, like=actor_params)
    got = run_f32(actor.apply, loaded, states)
    np.testing.assert_allclose(got, np_actor_from_state_dict(torch_sd, states), rtol=RTOL, atol=ATOL,
                               err_msg=rng.seed_msg)


def test_from_torch_state_dict_rejects_mismatches():
    params = creation_ordered_params("actor")
    sd = to_torch_state_dict(params)
    from_torch_state_dict(sd, like=params)  # the right one passes
    from_torch_state_dict(sd, like=actor_fns(6, 17).shapes)  # shapes-only `like` works too

    wrong = dict(sd)
    wrong["w_l1.weight"] = sd["w_l1.weight"].T.copy()  # flax (in, out) layout passed by mistake
    with pytest.raises(ValueError, match="does not match"):
        from_torch_state_dict(wrong, like=params)

    wrong = dict(sd)
    wrong["w_out.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="does not match"):
        from_torch_state_dict(wrong, like=params)

    with pytest.raises(ValueError, match="does not match"):  # a network for another observation size
        from_torch_state_dict(sd, like=actor_fns(6, 11).shapes)

    with pytest.raises(ValueError, match="does not match"):
        from_torch_state_dict({k: v for k, v in sd.items() if k != "lnorm2.beta"}, like=params)

    with pytest.raises(ValueError, match="does not match"):
        from_torch_state_dict(dict(sd, **{"w_l3.weight": np.zeros((4, 4), np.float32)}), like=params)

    with pytest.raises(ValueError, match="unexpected"):  # not a Linear/LayerNorm parameter name
        from_torch_state_dict(dict(sd, **{"lnorm1.running_mean": np.zeros(128, np.float32)}))
