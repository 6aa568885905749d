"""Batched rollouts: masking after termination, exact frame counts, time-limit flags, ordering, early exit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rollout_reference import masked_scan_rollout
from toy_envs import CounterState

from pderl_jax.buffers.ring import Transition
from pderl_jax.envs import BraxEnvironment, episode_major, rollout
from pderl_jax.envs.rollout import Environment


class CounterEnv(Environment):
    """Observation (t, lifetime); reward 1 + action[0]; terminates after `lifetime` steps."""

    obs_dim, action_dim = 2, 1

    def __init__(self, episode_length, max_lifetime, min_lifetime=1):
        self.episode_length = episode_length
        self.max_lifetime = max_lifetime
        self.min_lifetime = min_lifetime

    def reset(self, key):
        lifetime = jax.random.randint(key, (), self.min_lifetime, self.max_lifetime + 1).astype(jnp.float32)
        return CounterState(obs=jnp.stack([0.0, lifetime]), t=jnp.float32(0), lifetime=lifetime)

    def step(self, state, action):
        t = state.t + 1
        obs = jnp.stack([t, state.lifetime])
        return CounterState(obs=obs, t=t, lifetime=state.lifetime), obs, 1.0 + action[0], t >= state.lifetime


def gain_policy(gains, obs, key, alive):
    return jnp.tanh(gains[:, None] * obs[:, :1] / 100.0), gains


@pytest.mark.parametrize("episode_length,max_lifetime", [(12, 8), (12, 20), (7, 7)])
def test_rollout_masks_terminated_episodes_and_counts_frames(episode_length, max_lifetime):
    rng = np.random.default_rng()
    seed = int(rng.integers(2**31))
    env = CounterEnv(episode_length, max_lifetime)
    n = 9
    gains = jnp.asarray(rng.normal(size=n).astype(np.float32))
    result, carry = jax.jit(lambda k, g: rollout(env, k, n, gain_policy, g))(jax.random.key(seed), gains)
    lifetimes = np.asarray(result.transitions.state[0, :, 1]).astype(int)
    lengths = np.minimum(lifetimes, episode_length)
    msg = f"seed={seed} lifetimes={lifetimes}"
    np.testing.assert_array_equal(np.asarray(result.episode_length), lengths, err_msg=msg)
    assert int(result.frames) == lengths.sum(), msg
    valid = np.asarray(result.valid)
    done = np.asarray(result.transitions.done)
    truncated = np.asarray(result.transitions.truncated)
    for i in range(n):
        assert valid[:lengths[i], i].all() and not valid[lengths[i]:, i].any(), msg
        # the last stored step of each episode ends it; earlier ones do not
        assert done[lengths[i] - 1, i] == 1.0 and not done[:lengths[i] - 1, i].any(), msg
        cut = lifetimes[i] > episode_length
        assert truncated[lengths[i] - 1, i] == float(cut), msg
        t = np.arange(lengths[i], dtype=np.float64)
        expected_return = np.sum(1.0 + np.tanh(float(gains[i]) * t / 100.0))
        np.testing.assert_allclose(float(result.episode_return[i]), expected_return, rtol=1e-5, err_msg=msg)
        # stored next_state of step t is the observation at t + 1
        np.testing.assert_array_equal(np.asarray(result.transitions.next_state[:lengths[i] - 1, i]),
                                      np.asarray(result.transitions.state[1:lengths[i], i]), err_msg=msg)
    # masked steps add no reward
    assert np.all(np.asarray(result.transitions.reward)[~valid] == 0.0), msg
    np.testing.assert_array_equal(np.asarray(carry), np.asarray(gains))


def test_episode_major_orders_each_members_trials_in_sequence():
    env = CounterEnv(episode_length=5, max_lifetime=9)
    members, trials = 3, 2
    gains = jnp.arange(members * trials, dtype=jnp.float32)
    result, _ = rollout(env, jax.random.key(0), members * trials, gain_policy, gains)
    items, valid = episode_major(result, members)
    assert items.state.shape == (members, trials * 5, 2) and valid.shape == (members, trials * 5)
    for g in range(members):
        for e in range(trials):
            column = g * trials + e
            block = slice(e * 5, (e + 1) * 5)
            np.testing.assert_array_equal(np.asarray(items.state[g, block]), np.asarray(result.transitions.state[:, column]))
            np.testing.assert_array_equal(np.asarray(valid[g, block]), np.asarray(result.valid[:, column]))


def random_policy(action_dim):
    """Uniform random actions; the carry counts the steps of running episodes (frames)."""
    def policy(frames, obs, key, alive):
        return jax.random.uniform(key, (obs.shape[0], action_dim), minval=-1.0), frames + jnp.sum(alive)
    return policy


def assert_same_as_masked_scan(env, seed, num_episodes):
    """Early exit gives exactly the masked scan's valid transitions, masks, returns, lengths and carry."""
    policy = random_policy(env.action_dim)
    key = jax.random.key(seed)
    fast, carry = jax.jit(lambda k: rollout(env, k, num_episodes, policy, jnp.int32(0)))(key)
    steps, valid, returns, reference_carry = jax.jit(lambda k: masked_scan_rollout(env, k, num_episodes, policy,
                                                                          jnp.int32(0)))(key)
    msg = f"seed={seed}"
    valid = np.asarray(valid)
    np.testing.assert_array_equal(np.asarray(fast.valid), valid, err_msg=msg)
    for name in Transition.__dataclass_fields__:
        np.testing.assert_array_equal(np.asarray(getattr(fast.transitions, name))[valid],
                                      np.asarray(getattr(steps, name))[valid], err_msg=f"{msg} {name}")
    assert not np.asarray(fast.transitions.reward)[~valid].any(), msg
    np.testing.assert_array_equal(np.asarray(fast.episode_return), np.asarray(returns), err_msg=msg)
    np.testing.assert_array_equal(np.asarray(fast.episode_length), valid.sum(axis=0), err_msg=msg)
    assert int(carry) == int(reference_carry) == int(fast.frames) == valid.sum(), msg
    return fast


@pytest.mark.parametrize("episode_length,min_lifetime,max_lifetime", [
    (12, 1, 20),  # mixed: some terminate, some are cut by the time limit
    (9, 1, 1),  # every episode terminates at its first step
    (9, 10, 30),  # none terminates: all cut at the horizon
])
def test_early_exit_equals_the_masked_scan_on_a_toy_task(episode_length, min_lifetime, max_lifetime):
    seed = int(np.random.default_rng().integers(2**31))
    fast = assert_same_as_masked_scan(CounterEnv(episode_length, max_lifetime, min_lifetime), seed, 7)
    assert int(fast.episode_length.max()) == min(max_lifetime, episode_length) or min_lifetime > 1


def test_the_loop_stops_at_the_longest_episode_also_under_vmap():
    """A carry counting loop iterations shows the exit; vmapped runs each equal their own run."""
    rng = np.random.default_rng()
    seed = int(rng.integers(2**31))
    env = CounterEnv(episode_length=50, max_lifetime=12)
    count_steps = lambda calls, obs, key, alive: (jnp.zeros((obs.shape[0], 1)), calls + 1)
    run = jax.jit(lambda k: rollout(env, k, 3, count_steps, jnp.int32(0)))
    keys = jax.random.split(jax.random.key(seed), 4)
    batched, calls = jax.jit(jax.vmap(lambda k: rollout(env, k, 3, count_steps, jnp.int32(0))))(keys)
    for i in range(4):
        single, single_calls = run(keys[i])
        assert int(single_calls) == int(single.episode_length.max()) <= 12, f"seed={seed}"
        assert int(calls[i]) == int(single_calls), f"seed={seed}"  # a finished run stops counting
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(jax.tree.map(lambda x: x[i], batched))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"seed={seed}")


def test_brax_task_rolls_out_with_masks_and_exits_like_the_masked_scan():
    env = BraxEnvironment("hopper", physics="positional", episode_length=30)
    assert (env.obs_dim, env.action_dim) == (11, 3)
    result = assert_same_as_masked_scan(env, int(np.random.default_rng().integers(2**31)), 4)
    lengths = np.asarray(result.episode_length)
    assert ((lengths >= 1) & (lengths <= 30)).all()
    assert np.isfinite(np.asarray(result.episode_return)).all()
