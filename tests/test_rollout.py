"""Batched rollouts: masking after termination, exact frame counts, time-limit flags, ordering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_envs import CounterState

from pderl_jax.config import ConfigError
from pderl_jax.envs import BraxEnvironment, episode_major, rollout


class CounterEnv:
    """Observation (t, lifetime); reward 1 + action[0]; terminates after `lifetime` steps."""

    obs_dim, action_dim = 2, 1

    def __init__(self, episode_length, max_lifetime):
        self.episode_length = episode_length
        self.max_lifetime = max_lifetime

    def reset(self, key):
        lifetime = jax.random.randint(key, (), 1, self.max_lifetime + 1).astype(jnp.float32)
        return CounterState(obs=jnp.stack([0.0, lifetime]), t=jnp.float32(0), lifetime=lifetime)

    def step(self, state, action):
        t = state.t + 1
        obs = jnp.stack([t, state.lifetime])
        return CounterState(obs=obs, t=t, lifetime=state.lifetime), obs, 1.0 + action[0], t >= state.lifetime


def gain_policy(gains, obs, key):
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


def test_brax_task_rolls_out_with_masks():
    env = BraxEnvironment("hopper", backend="positional", episode_length=30)
    assert (env.obs_dim, env.action_dim) == (11, 3)
    policy = lambda carry, obs, key: (jnp.clip(jax.random.normal(key, (obs.shape[0], 3)), -1, 1), carry)
    result, _ = jax.jit(lambda k: rollout(env, k, 4, policy, None))(jax.random.key(1))
    lengths = np.asarray(result.episode_length)
    assert ((lengths >= 1) & (lengths <= 30)).all()
    assert int(result.frames) == int(np.asarray(result.valid).sum())
    assert np.isfinite(np.asarray(result.episode_return)).all()


@pytest.mark.parametrize("task,backend,length,fragment", [
    ("pong", "spring", 1000, "unknown task 'pong'"),
    ("hopper", "bullet", 1000, "unknown brax physics 'bullet'"),
    ("swimmer", "spring", 1000, "does not support the 'spring' physics; choose auto or one of generalized"),
    ("hopper", "spring", 0, "episode length must be positive"),
])
def test_bad_environment_settings_are_rejected(task, backend, length, fragment):
    with pytest.raises(ConfigError, match=fragment):
        BraxEnvironment(task, backend=backend, episode_length=length)


@pytest.mark.parametrize("task,expected", [("swimmer", "generalized"), ("halfcheetah", "spring"), ("ant", "spring")])
def test_auto_physics_picks_a_pipeline_the_task_supports(task, expected):
    env = BraxEnvironment(task)
    assert (env.backend, env.physics) == ("brax", expected)
    assert env.obs_dim == {"swimmer": 8, "halfcheetah": 17, "ant": 27}[task]
    if task == "swimmer":  # brax's fluid model (viscosity) runs under current JAX
        env.episode_length = 5
        policy = lambda carry, obs, key: (jax.random.uniform(key, (obs.shape[0], 2), minval=-1, maxval=1), carry)
        result, _ = jax.jit(lambda k: rollout(env, k, 2, policy, None))(jax.random.key(0))
        assert int(result.frames) == 10 and np.isfinite(np.asarray(result.episode_return)).all()
