"""Exploration noise for the RL actor's episodes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pderl_jax.config import LearnerConfig


def ou_noise_step(key: jax.Array, state: jax.Array, config: LearnerConfig) -> tuple[jax.Array, jax.Array]:
    """One Ornstein-Uhlenbeck step (mu = 0): returns (scale * new_state, new_state).

    The official code never resets this state, so it carries over between episodes and
    generations; keep it in the learner state and thread it through.
    """
    new_state = state - config.ou_theta * state + config.ou_sigma * jax.random.normal(key, state.shape)
    return config.ou_scale * new_state, new_state


def exploration_noise(key: jax.Array, state: jax.Array, config: LearnerConfig) -> tuple[jax.Array, jax.Array]:
    """Additive action noise and the next noise state (unchanged for Gaussian noise)."""
    if config.exploration == "ou":
        return ou_noise_step(key, state, config)
    return config.gaussian_noise_std * jax.random.normal(key, state.shape), state


def noisy_action(action: jax.Array, noise: jax.Array) -> jax.Array:
    """Official exploration action: clip(mu(s) + noise, -1, 1); this clipped action is stored."""
    return jnp.clip(action + noise, -1.0, 1.0)
