"""benchmarks/ppo_variants.py: inside `cleanrl_optimiser`, `optax.adam` is CleanRL's Adam (eps 1e-5, the
rate annealed per iteration), checked against a float64 NumPy Adam; inside `cleanrl_critic_gain`, the
preset's critic ends in an orthogonal layer of gain 1 and keeps its hidden layers; outside, brax's own."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from pderl_jax.experiments.ppo import network_factory
from pderl_jax.experiments.ppo_presets import CLEANRL

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "ppo_variants.py"
spec = importlib.util.spec_from_file_location("ppo_variants_script", SCRIPT)
ppo_variants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ppo_variants)


def numpy_adam(grads, rates, eps, b1=0.9, b2=0.999):
    params, m, v = np.zeros_like(grads[0]), np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for t, (g, rate) in enumerate(zip(grads, rates), start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        params = params - rate * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return params


def test_cleanrl_adam_anneals_per_iteration_with_eps_1e_5_and_is_undone_after():
    rng = np.random.default_rng()
    updates, iterations, rate = int(rng.integers(2, 5)), int(rng.integers(3, 6)), 3e-4
    steps = updates * iterations
    # gradients small enough that eps 1e-5 against 1e-8 shows
    grads = [rng.normal(0, 1, 6) * 10.0 ** rng.uniform(-7, -4, 6) for _ in range(steps)]
    original = optax.adam
    with ppo_variants.cleanrl_optimiser(frames=iterations * 2048, rate=rate, updates_per_iteration=updates):
        optimiser = optax.adam(learning_rate=rate)
        with pytest.raises(ValueError, match="learning rate"):
            optax.adam(learning_rate=1e-3)
    assert optax.adam is original
    params, state = np.zeros(6, np.float32), optimiser.init(np.zeros(6, np.float32))
    for g in grads:
        step, state = optimiser.update(np.asarray(g, np.float32), state)
        params = optax.apply_updates(params, step)
    rates = [rate * (1 - (t // updates) / iterations) for t in range(steps)]
    expected = numpy_adam(grads, rates, eps=1e-5)
    np.testing.assert_allclose(params, expected, rtol=2e-4, atol=1e-12)
    assert not np.allclose(expected, numpy_adam(grads, rates, eps=1e-8), rtol=1e-2)  # eps matters here
    assert not np.allclose(expected, numpy_adam(grads, [rate] * steps, eps=1e-5), rtol=1e-2)  # so does annealing


def test_printed_rows_are_read_per_seed():
    lines = ["noise", "ppo seed 2: 0 frames, test 110.3, training episodes nan (92 s)",
             "ppo seed 2: 49152 frames, test 360.9, training episodes 351.4 (400 s)",
             "ppo seed 0: 49152 frames, test -5.5, training episodes 340.2 (416 s)"]
    rows = ppo_variants.parse(lines)
    assert rows[0] == [(49152, -5.5, 340.2)]
    assert rows[2][1] == (49152, 360.9, 351.4) and rows[2][0][0] == 0 and np.isnan(rows[2][0][2])


def critic_kernels(seed: int) -> list[np.ndarray]:
    networks = network_factory(CLEANRL)(11, 3, preprocess_observations_fn=lambda obs, params: obs)
    params = networks.value_network.init(jax.random.PRNGKey(seed))
    return [np.asarray(layer["kernel"], np.float64) for layer in params["params"].values()]


def test_the_critic_ends_with_gain_1_inside_the_block_and_sqrt_2_outside():
    seed = int(np.random.default_rng().integers(2**31))
    brax_own = critic_kernels(seed)
    with ppo_variants.cleanrl_critic_gain(frames=1):
        cleanrl = critic_kernels(seed)
    assert [k.shape for k in cleanrl] == [(11, 64), (64, 64), (64, 1)]
    for hidden_ours, hidden_brax in zip(cleanrl[:-1], brax_own[:-1]):  # hidden layers untouched
        np.testing.assert_array_equal(hidden_ours, hidden_brax)
        np.testing.assert_allclose(np.linalg.svd(hidden_ours, compute_uv=False), np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cleanrl[-1]), 1.0, rtol=1e-5)  # one orthonormal column, gain 1
    np.testing.assert_allclose(np.linalg.norm(brax_own[-1]), np.sqrt(2), rtol=1e-5)  # the preset's gain sqrt 2
    np.testing.assert_array_equal(critic_kernels(seed)[-1], brax_own[-1])  # brax's own function is back
