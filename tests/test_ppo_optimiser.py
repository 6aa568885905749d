"""benchmarks/ppo_optimiser.py: inside `cleanrl_optimiser`, `optax.adam` is CleanRL's Adam (eps 1e-5, the
rate annealed per iteration), checked against a float64 NumPy Adam; outside it, optax's own again."""

import importlib.util
from pathlib import Path

import numpy as np
import optax
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "ppo_optimiser.py"
spec = importlib.util.spec_from_file_location("ppo_optimiser_script", SCRIPT)
ppo_optimiser = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ppo_optimiser)


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
    with ppo_optimiser.cleanrl_optimiser(frames=iterations * 2048, rate=rate, updates_per_iteration=updates):
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
    rows = ppo_optimiser.parse(lines)
    assert rows[0] == [(49152, -5.5, 340.2)]
    assert rows[2][1] == (49152, 360.9, 351.4) and rows[2][0][0] == 0 and np.isnan(rows[2][0][2])
