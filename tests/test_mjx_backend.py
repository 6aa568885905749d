"""`--backend mjx` builds the Gymnasium v5 tasks on MJX: their sizes, and Hopper stepped beside Gymnasium."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.config import TASKS
from pderl_jax.envs import make_environment
from pderl_jax.training.run_folder import environment_from_record, environment_record


@pytest.mark.parametrize("task", TASKS)
def test_mjx_tasks_have_gymnasiums_sizes_and_reopen_from_their_record(task):
    env = make_environment(task, "mjx", episode_length=30)
    reference = gym.make(env.env_id)
    assert (env.obs_dim, env.action_dim) == (reference.observation_space.shape[0], reference.action_space.shape[0])
    again = environment_from_record(environment_record(env), task)
    assert (again.backend, again.task, again.episode_length) == ("mjx", task, 30)


def test_mjx_hopper_follows_gymnasium_for_20_steps():
    """From Gymnasium's reset state, the same random actions: observations within 1e-3 and rewards
    within 1e-3 (float32 against float64; measured 1.1e-5 over these steps), flags equal, up to the
    end of the episode."""
    seed = int(np.random.default_rng().integers(2**31))
    rng = np.random.default_rng(seed)
    env = make_environment("Hopper-v5", "mjx")
    reference = gym.make("Hopper-v5").unwrapped
    reference.reset(seed=seed)
    state = env.state_from(jnp.asarray(reference.data.qpos, jnp.float32), jnp.asarray(reference.data.qvel, jnp.float32))
    step = jax.jit(env.step)
    for t in range(20):
        action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        state, obs, reward, terminated = step(state, jnp.asarray(action))
        want_obs, want_reward, want_terminated, _, _ = reference.step(action.astype(np.float64))
        msg = f"seed={seed} step {t}"
        np.testing.assert_allclose(np.asarray(obs), want_obs, atol=1e-3, err_msg=msg)
        assert abs(float(reward) - want_reward) < 1e-3, msg
        assert bool(terminated) == want_terminated, msg
        if want_terminated:  # an ended episode is not stepped further (the rollout masks it)
            break
