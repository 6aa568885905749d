"""Device-memory estimate of a configuration, printed before anything is allocated."""

from __future__ import annotations

import math

import jax

from pderl_jax.buffers.ring import Transition
from pderl_jax.config import Config
from pderl_jax.networks import init_actor, init_critic, make_actor, make_critic


def _param_count(init) -> int:
    """Parameters of the network `init()` builds, read off its shapes (nothing is allocated)."""
    shapes = jax.eval_shape(init)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def memory_estimate(config: Config, obs_dim: int, action_dim: int) -> dict[str, int]:
    """Bytes held by the persistent training state (float32), by component."""
    evo, learner, net = config.evolution, config.learner, config.network
    item = Transition.bytes_per_item(obs_dim, action_dim)
    key = jax.random.key(0)
    actor = 4 * _param_count(lambda: init_actor(key, make_actor(action_dim, net), obs_dim))
    twin = learner.algorithm == "td3"
    critic = 4 * _param_count(lambda: init_critic(key, make_critic(net, twin=twin), obs_dim, action_dim))
    members = evo.pop_size if config.has_population else 0
    return {
        "replay_buffer": learner.replay_capacity * item,
        # members + the RL actor's own memory
        "genetic_memories": (members + 1) * evo.genetic_memory_capacity * item if members else 0,
        "population": members * actor,
        "learner": 4 * (actor + critic),  # online, target, Adam m and v
    }


def format_memory_estimate(estimate: dict[str, int]) -> str:
    total = sum(estimate.values())
    parts = ", ".join(f"{name.replace('_', ' ')} {_mib(size)}" for name, size in estimate.items())
    return f"memory estimate: {_mib(total)} ({parts})"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
