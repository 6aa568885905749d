"""PPO's loss as CleanRL and Baselines compute it, for brax's PPO trainer.

brax's loss recomputes the advantages and value targets at every minibatch with the critic of the
moment. Over 10 epochs of 32 minibatches on one 2,048-step rollout (the `cleanrl` preset), that
critic fits the very returns it is judged on, so the advantages of the later epochs shrink to noise
that the per-minibatch normalisation then scales back up. CleanRL computes them once, with the
critic that collected the rollout, and keeps them for every epoch; so does `cleanrl_loss`, which
takes the rollout's values from what brax stores while acting (`policy_extras['value']`).

It follows CleanRL's `ppo_continuous_action.py` (vwxyzjn/cleanrl@fe8d8a0) otherwise too:
GAE advantages (`returns - values`), a time limit ends the return like a termination, the clipped
surrogate, value clipping around the rollout's values, `0.5 * vf_coef` on the value loss, and the
entropy bonus. What brax's trainer still decides: the rollout is cut into 64-step segments, each
bootstrapped at its end with the critic of the moment, and a minibatch is one such segment.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from brax.training.agents.ppo import losses as brax_losses


def segment_advantages(rewards, values, bootstrap_value, ends, discounting: float, gae_lambda: float):
    """(advantages, returns) [T, B] of time-major segments: GAE from `values` (the rollout's critic),
    `bootstrap_value` [B] after each segment's last step, nothing carried past a step that `ends` an
    episode (termination or time limit)."""
    next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    continues = 1.0 - ends
    deltas = rewards + discounting * continues * next_values - values

    def backwards(after, step):
        delta, going_on = step
        advantage = delta + discounting * gae_lambda * going_on * after
        return advantage, advantage

    _, advantages = jax.lax.scan(backwards, jnp.zeros_like(bootstrap_value), (deltas, continues), reverse=True)
    return advantages, advantages + values


def cleanrl_loss(params, normalizer_params, data, rng, ppo_network, entropy_cost: float = 0.0,
                 discounting: float = 0.99, reward_scaling: float = 1.0, gae_lambda: float = 0.95,
                 clipping_epsilon: float = 0.2, normalize_advantage: bool = True, vf_coefficient: float = 0.5,
                 clipping_epsilon_value: float | None = None, use_distributional_critic: bool = False):
    """brax's `compute_ppo_loss` signature, CleanRL's loss: (loss, metrics) of a minibatch [B, T]."""
    if use_distributional_critic:
        raise ValueError("the CleanRL loss has a scalar critic; use_distributional_critic must be False")
    distribution = ppo_network.parametric_action_distribution
    data = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), data)  # time first
    logits = ppo_network.policy_network.apply(normalizer_params, params.policy, data.observation)
    values = ppo_network.value_network.apply(normalizer_params, params.value, data.observation)
    rollout_values = data.extras["policy_extras"]["value"]
    last_observation = jax.tree.map(lambda x: x[-1], data.next_observation)
    bootstrap = jax.lax.stop_gradient(
        ppo_network.value_network.apply(normalizer_params, params.value, last_observation))
    ends = 1.0 - data.discount  # terminated or truncated, as CleanRL's `done`
    advantages, returns = segment_advantages(data.reward * reward_scaling, rollout_values, bootstrap, ends,
                                             discounting, gae_lambda)
    advantages, returns = jax.lax.stop_gradient(advantages), jax.lax.stop_gradient(returns)
    if normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = jnp.exp(distribution.log_prob(logits, data.extras["policy_extras"]["raw_action"])
                    - data.extras["policy_extras"]["log_prob"])
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantages,
                                        jnp.clip(ratio, 1 - clipping_epsilon, 1 + clipping_epsilon) * advantages))
    value_loss = (values - returns) ** 2
    if clipping_epsilon_value is not None:
        clipped = rollout_values + jnp.clip(values - rollout_values, -clipping_epsilon_value, clipping_epsilon_value)
        value_loss = jnp.maximum(value_loss, (clipped - returns) ** 2)
    value_loss = 0.5 * vf_coefficient * jnp.mean(value_loss)
    entropy = jnp.mean(distribution.entropy(logits, rng))
    total = policy_loss + value_loss - entropy_cost * entropy
    scale = distribution.create_dist(logits).scale
    return total, {"total_loss": total, "policy_loss": policy_loss, "v_loss": value_loss,
                   "entropy_loss": -entropy_cost * entropy, "policy_dist_mean_std": jnp.mean(scale)}


@contextlib.contextmanager
def brax_ppo_loss(loss):
    """brax's PPO trainer computes `loss` instead of its own while the block runs (it looks the loss up
    when it builds the training step); `None` keeps brax's."""
    original = brax_losses.compute_ppo_loss
    if loss is not None:
        brax_losses.compute_ppo_loss = loss
    try:
        yield
    finally:
        brax_losses.compute_ppo_loss = original


__all__ = ["brax_ppo_loss", "cleanrl_loss", "segment_advantages"]
