"""Native MuJoCo backend: returns, frames, termination vs truncation against Gymnasium by hand."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.config import ConfigError
from pderl_jax.envs import NativeEnvironment, make_environment, resolve_task, rollout


def reset_seeds(key, n):
    """The seeds the backend gives Gymnasium for `rollout(env, key, n, ...)`."""
    keys = jax.random.split(jax.random.split(key)[0], n)
    return [int(s) for s in jax.vmap(lambda k: jax.random.randint(k, (), 0, np.iinfo(np.int32).max))(keys)]


def fixed_actions_policy(actions):
    table = jnp.asarray(actions)

    def policy(t, obs, key, alive):
        return jnp.broadcast_to(table[t], (obs.shape[0], table.shape[1])), t + 1

    return policy


@pytest.mark.parametrize("env_id,horizon", [("Hopper-v5", 300), ("HalfCheetah-v5", 25)])
def test_returns_and_lengths_match_gymnasium_stepped_by_hand(env_id, horizon):
    rng = np.random.default_rng()
    seed = int(rng.integers(2**31))
    env = NativeEnvironment(env_id, episode_length=horizon)
    actions = rng.uniform(-1, 1, (horizon, env.action_dim)).astype(np.float32)
    key = jax.random.key(seed)
    result, _ = jax.jit(lambda k: rollout(env, k, 3, fixed_actions_policy(actions), jnp.int32(0)))(key)
    steps = result.transitions
    for i, gym_seed in enumerate(reset_seeds(key, 3)):
        reference = gym.make(env_id, max_episode_steps=horizon)
        obs, _ = reference.reset(seed=gym_seed)
        total, magnitude, length, terminated, truncated = 0.0, 0.0, 0, False, False
        for t in range(horizon):
            np.testing.assert_allclose(np.asarray(steps.state[t, i]), obs, rtol=1e-5, atol=1e-5)
            obs, reward, terminated, truncated, _ = reference.step(actions[t])
            total, magnitude, length = total + reward, magnitude + abs(reward), length + 1
            np.testing.assert_allclose(np.asarray(steps.next_state[t, i]), obs, rtol=1e-5, atol=1e-5)
            if terminated or truncated:
                break
        msg = f"seed={seed} {env_id} episode {i}"
        assert int(result.episode_length[i]) == length, msg
        # Our rewards are float32 and summed in float32, Gymnasium's float64: up to one float32 epsilon
        # per step of the summed magnitudes apart, which matters where the return is near zero.
        float32_sum = length * np.finfo(np.float32).eps * magnitude
        np.testing.assert_allclose(float(result.episode_return[i]), total, rtol=1e-5, atol=float32_sum, err_msg=msg)
        last = length - 1
        # termination and the time limit are told apart, as Gymnasium tells them apart
        assert float(steps.done[last, i]) == 1.0, msg
        assert float(steps.truncated[last, i]) == float(truncated and not terminated), msg
        assert np.all(np.asarray(steps.done[:last, i]) == 0.0), msg
    assert int(result.frames) == int(np.asarray(result.valid).sum())


def test_same_key_same_episodes_different_key_different_episodes():
    env = NativeEnvironment("walker2d", episode_length=20)
    policy = lambda carry, obs, key, alive: (jax.random.uniform(key, (obs.shape[0], env.action_dim), minval=-1), carry)
    run = jax.jit(lambda k: rollout(env, k, 2, policy, None)[0].episode_return)
    a, b, c = run(jax.random.key(4)), run(jax.random.key(4)), run(jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # exact: one program, same key
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_task_names_and_errors():
    assert resolve_task("HalfCheetah-v5") == "halfcheetah" and resolve_task("ant") == "ant"
    assert resolve_task("hopper-v5") == "hopper"
    with pytest.raises(ConfigError, match="unknown task 'Humanoid-v5'.*HalfCheetah-v5"):
        resolve_task("Humanoid-v5")
    with pytest.raises(ConfigError, match="applies to the brax backend only"):
        make_environment("hopper", "native", physics="spring")
    with pytest.raises(ConfigError, match="choose one of mjx, native, brax"):
        make_environment("hopper", "bullet")
    env = make_environment("Ant-v5", "native")
    assert (env.task, env.action_dim) == ("ant", 8) and env.obs_dim == gym.make("Ant-v5").observation_space.shape[0]


def test_runs_recorded_with_the_old_name_of_native_mujoco_still_load():
    """Records before 0.8 name the native backend "gymnasium"; they rebuild the native task and are
    labelled native."""
    from pderl_jax.analysis.curves import backend_label
    from pderl_jax.training.run_folder import environment_from_record, environment_record

    old = {"name": "hopper", "backend": "gymnasium", "episode_length": 20}
    env = environment_from_record(old, "hopper")
    assert env.backend == "native" and env.batched and env.episode_length == 20
    assert environment_record(env) == {**old, "backend": "native"}
    assert backend_label(old) == backend_label(environment_record(env)) == "native"
    assert backend_label({"backend": "brax", "physics": "spring"}) == "brax spring"

