"""Environments and batched rollouts."""

from pderl_jax.envs.brax_env import BACKENDS, BraxEnvironment
from pderl_jax.envs.rollout import Environment, Rollout, episode_major, rollout

__all__ = ["BACKENDS", "BraxEnvironment", "Environment", "Rollout", "episode_major", "rollout"]
