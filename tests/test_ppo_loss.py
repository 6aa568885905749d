"""CleanRL's PPO loss for brax's trainer (`experiments/ppo_loss.py`) against a float64 NumPy transcription of
CleanRL's ppo_continuous_action.py (vwxyzjn/cleanrl@fe8d8a0: its GAE loop, clipped surrogate, clipped value
loss and entropy), on fresh random data and networks each run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.training import types
from brax.training.agents.ppo import losses as brax_losses
from brax.training.agents.ppo.losses import PPONetworkParams

from pderl_jax.experiments.ppo import network_factory
from pderl_jax.experiments.ppo_loss import brax_ppo_loss, cleanrl_loss, segment_advantages
from pderl_jax.experiments.ppo_presets import CLEANRL


def cleanrl_gae(rewards, values, next_value, dones, gamma, lam):
    """CleanRL's loop for one segment [T]: dones[t] says the episode ended with step t."""
    steps = len(rewards)
    advantages, last = np.zeros(steps), 0.0
    for t in reversed(range(steps)):
        next_non_terminal = 1.0 - dones[t]
        next_values = next_value if t == steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
        advantages[t] = last = delta + gamma * lam * next_non_terminal * last
    return advantages, advantages + values


def test_segment_advantages_match_cleanrl_gae():
    rng = np.random.default_rng()
    steps, batch = int(rng.integers(2, 20)), int(rng.integers(1, 5))
    gamma, lam = float(rng.uniform(0.9, 0.999)), float(rng.uniform(0.8, 1.0))
    rewards, values = rng.normal(size=(steps, batch)), rng.normal(size=(steps, batch))
    bootstrap, ends = rng.normal(size=batch), (rng.random((steps, batch)) < 0.2).astype(np.float64)
    advantages, returns = segment_advantages(*(jnp.asarray(x, jnp.float32) for x in (rewards, values, bootstrap, ends)),
                                             gamma, lam)
    for b in range(batch):
        expected, expected_returns = cleanrl_gae(rewards[:, b], values[:, b], bootstrap[b], ends[:, b], gamma, lam)
        np.testing.assert_allclose(np.asarray(advantages)[:, b], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(returns)[:, b], expected_returns, rtol=1e-4, atol=1e-5)


def random_minibatch(rng, batch, steps, obs_size, networks, params, normalizer):
    """A minibatch [B, T] as brax's trainer hands it to the loss: the actions sampled, their log-probs and the
    critic's values recorded by a policy slightly different from `params` (so the ratios are not all 1)."""
    observation = rng.normal(size=(batch, steps, obs_size)).astype(np.float32)
    next_observation = rng.normal(size=(batch, steps, obs_size)).astype(np.float32)
    mean, std = networks.policy_network.apply(normalizer, params.policy, observation)
    behaviour_mean = np.asarray(mean, np.float64) + rng.normal(0, 0.05, mean.shape)
    raw_action = behaviour_mean + np.asarray(std) * rng.normal(size=mean.shape)
    log_prob = gaussian_log_prob(raw_action, behaviour_mean, np.asarray(std, np.float64))
    value = np.asarray(networks.value_network.apply(normalizer, params.value, observation)) + rng.normal(0, 0.3, (batch, steps))
    ends = (rng.random((batch, steps)) < 0.15).astype(np.float32)
    return types.Transition(
        observation=jnp.asarray(observation), action=jnp.asarray(raw_action, jnp.float32),
        reward=jnp.asarray(rng.normal(size=(batch, steps)), jnp.float32), discount=jnp.asarray(1.0 - ends),
        next_observation=jnp.asarray(next_observation),
        extras={"policy_extras": {"raw_action": jnp.asarray(raw_action, jnp.float32),
                                  "log_prob": jnp.asarray(log_prob, jnp.float32),
                                  "value": jnp.asarray(value, jnp.float32),
                                  "distribution_params": (jnp.asarray(behaviour_mean, jnp.float32), std)},
                "state_extras": {"truncation": jnp.zeros((batch, steps))}})


def gaussian_log_prob(x, mean, std):
    return np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


def reference_loss(data, networks, params, normalizer, gamma, lam, clip, clip_value, vf_coef, ent_coef):
    """CleanRL's loss of the minibatch in float64, per segment of the batch."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    mean, std = (f64(x) for x in networks.policy_network.apply(normalizer, params.policy, data.observation))
    new_values = f64(networks.value_network.apply(normalizer, params.value, data.observation))
    last = jax.tree.map(lambda x: x[:, -1], data.next_observation)
    bootstrap = f64(networks.value_network.apply(normalizer, params.value, last))
    old_values, dones = f64(data.extras["policy_extras"]["value"]), 1.0 - f64(data.discount)
    pairs = [cleanrl_gae(f64(data.reward)[b], old_values[b], bootstrap[b], dones[b], gamma, lam)
             for b in range(dones.shape[0])]
    advantages, returns = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = np.exp(gaussian_log_prob(f64(data.extras["policy_extras"]["raw_action"]), mean, std)
                   - f64(data.extras["policy_extras"]["log_prob"]))
    pg_loss = np.maximum(-advantages * ratio, -advantages * np.clip(ratio, 1 - clip, 1 + clip)).mean()
    clipped = old_values + np.clip(new_values - old_values, -clip_value, clip_value)
    v_loss = 0.5 * np.maximum((new_values - returns) ** 2, (clipped - returns) ** 2).mean()
    entropy = np.sum(0.5 + 0.5 * math.log(2 * math.pi) + np.log(std), axis=-1).mean()
    return pg_loss, v_loss, pg_loss - ent_coef * entropy + v_loss * vf_coef


def networks_and_params(rng, obs_size, action_size):
    from brax.training.acme import running_statistics, specs

    networks = network_factory(CLEANRL)(obs_size, action_size, preprocess_observations_fn=running_statistics.normalize)
    keys = jax.random.split(jax.random.key(int(rng.integers(2**31))), 2)
    params = PPONetworkParams(policy=networks.policy_network.init(keys[0]), value=networks.value_network.init(keys[1]))
    normalizer = running_statistics.init_state(specs.Array((obs_size,), jnp.float32))
    return networks, params, normalizer


def test_cleanrl_loss_matches_a_numpy_transcription_of_cleanrl():
    rng = np.random.default_rng()
    obs_size, action_size, batch, steps = int(rng.integers(2, 6)), int(rng.integers(1, 4)), 3, int(rng.integers(4, 12))
    networks, params, normalizer = networks_and_params(rng, obs_size, action_size)
    data = random_minibatch(rng, batch, steps, obs_size, networks, params, normalizer)
    gamma, lam = float(rng.uniform(0.9, 0.999)), float(rng.uniform(0.8, 1.0))
    clip, clip_value, vf_coef, ent_coef = 0.2, float(rng.uniform(0.05, 0.5)), float(rng.uniform(0.2, 1)), float(rng.uniform(0, 0.1))
    loss, metrics = cleanrl_loss(params, normalizer, data, jax.random.key(0), networks, entropy_cost=ent_coef,
                                 discounting=gamma, gae_lambda=lam, clipping_epsilon=clip,
                                 vf_coefficient=vf_coef, clipping_epsilon_value=clip_value)
    pg_loss, v_loss, total = reference_loss(data, networks, params, normalizer, gamma, lam, clip, clip_value, vf_coef,
                                            ent_coef)
    assert float(metrics["policy_loss"]) == pytest.approx(pg_loss, rel=1e-3, abs=1e-5)
    assert float(metrics["v_loss"]) == pytest.approx(v_loss * vf_coef, rel=1e-3, abs=1e-5)
    assert float(loss) == pytest.approx(total, rel=1e-3, abs=1e-5)


def test_the_advantages_come_from_the_critic_that_collected_the_rollout():
    """With every segment ending an episode at its last step (nothing bootstrapped), another critic changes the
    value loss but not the policy loss; brax's own loss, recomputing advantages with it, changes both."""
    rng = np.random.default_rng()
    networks, params, normalizer = networks_and_params(rng, 4, 2)
    data = random_minibatch(rng, 2, 8, 4, networks, params, normalizer)
    data = data._replace(discount=data.discount.at[:, -1].set(0.0))
    other = params.replace(value=networks_and_params(rng, 4, 2)[1].value)
    kwargs = dict(discounting=0.99, gae_lambda=0.95, clipping_epsilon=0.2, clipping_epsilon_value=0.2)
    ours = [cleanrl_loss(p, normalizer, data, jax.random.key(0), networks, **kwargs)[1] for p in (params, other)]
    assert float(ours[0]["policy_loss"]) == pytest.approx(float(ours[1]["policy_loss"]), rel=1e-6)
    assert float(ours[0]["v_loss"]) != pytest.approx(float(ours[1]["v_loss"]), rel=1e-3)
    braxs = [brax_losses.compute_ppo_loss(p, normalizer, data, jax.random.key(0), networks, **kwargs)[1]
             for p in (params, other)]
    assert float(braxs[0]["policy_loss"]) != pytest.approx(float(braxs[1]["policy_loss"]), rel=1e-3)


def test_the_loss_is_brax_s_again_after_the_block_even_on_error():
    original = brax_losses.compute_ppo_loss
    with brax_ppo_loss(cleanrl_loss):
        assert brax_losses.compute_ppo_loss is cleanrl_loss
    assert brax_losses.compute_ppo_loss is original
    with pytest.raises(RuntimeError), brax_ppo_loss(cleanrl_loss):
        raise RuntimeError("a run that fails")
    assert brax_losses.compute_ppo_loss is original
    with brax_ppo_loss(None):
        assert brax_losses.compute_ppo_loss is original
