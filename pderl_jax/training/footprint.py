"""Device-memory estimate of a configuration, printed before anything is allocated."""

from __future__ import annotations

from pderl_jax.buffers.ring import Transition
from pderl_jax.config import Config


def _actor_params(obs_dim: int, action_dim: int, hidden: tuple[int, ...], layer_norm: bool) -> int:
    total, fan_in = 0, obs_dim
    for width in hidden:
        total += fan_in * width + width + (2 * width if layer_norm else 0)
        fan_in = width
    return total + fan_in * action_dim + action_dim


def _critic_params(obs_dim: int, action_dim: int, width: int, hidden: int, layer_norm: bool) -> int:
    return (obs_dim + 1) * width + (action_dim + 1) * width + (2 * width + 1) * hidden \
        + (2 * hidden if layer_norm else 0) + hidden + 1


def memory_estimate(config: Config, obs_dim: int, action_dim: int) -> dict[str, int]:
    """Bytes held by the persistent training state (float32), by component."""
    evo, learner, net = config.evolution, config.learner, config.network
    item = Transition.bytes_per_item(obs_dim, action_dim)
    actor = 4 * _actor_params(obs_dim, action_dim, tuple(net.actor_hidden), net.use_layer_norm)
    critics = 2 if learner.algorithm == "td3" else 1
    critic = 4 * critics * _critic_params(obs_dim, action_dim, net.critic_input_width, net.critic_hidden_width,
                                          net.use_layer_norm)
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
