"""Baselines run beside our methods in `pderl-jax compare` (PPO from brax.training)."""
