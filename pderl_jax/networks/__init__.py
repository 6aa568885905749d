"""Actor and critic networks (official architectures), population init and state-dict I/O."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pderl_jax.config import NetworkConfig
from pderl_jax.networks.modules import Actor, Critic, OfficialLayerNorm, TorchDense, TwinCritic, normalize_unbiased
from pderl_jax.networks.torch_layout import from_torch_state_dict, to_torch_state_dict


def make_actor(action_dim: int, config: NetworkConfig = NetworkConfig(), rl: bool = False) -> Actor:
    """Population actor, or with `rl=True` the RL actor whose output layer starts x0.1."""
    return Actor(
        action_dim=action_dim,
        hidden_sizes=tuple(config.actor_hidden),
        use_layer_norm=config.use_layer_norm,
        output_init_scale=config.rl_actor_output_scale if rl else 1.0,
    )


def make_critic(config: NetworkConfig = NetworkConfig(), twin: bool = False) -> Critic | TwinCritic:
    cls = TwinCritic if twin else Critic
    return cls(config.critic_input_width, config.critic_hidden_width, config.use_layer_norm)


def init_actor(key: jax.Array, actor: Actor, obs_dim: int) -> dict:
    return actor.init(key, jnp.zeros((obs_dim,), jnp.float32))["params"]


def init_critic(key: jax.Array, critic: Critic | TwinCritic, obs_dim: int, action_dim: int) -> dict:
    return critic.init(key, jnp.zeros((1, obs_dim), jnp.float32), jnp.zeros((1, action_dim), jnp.float32))["params"]


def init_population(key: jax.Array, actor: Actor, obs_dim: int, size: int) -> dict:
    """`size` independently initialised actors as one pytree stacked on axis 0."""
    return jax.vmap(lambda k: init_actor(k, actor, obs_dim))(jax.random.split(key, size))


def apply_actor(actor: Actor, params: dict, states: jax.Array) -> jax.Array:
    return actor.apply({"params": params}, states)


def apply_critic(critic: Critic | TwinCritic, params: dict, states: jax.Array, actions: jax.Array) -> jax.Array:
    return critic.apply({"params": params}, states, actions)


def weight_matrix_mask(params: dict) -> dict:
    """True for Linear weight matrices (kernels), False for biases and LayerNorm gamma/beta.

    Works at any nesting depth (a twin critic nests its layers under "critics"). The official
    proximal and Gaussian mutations perturb only these leaves.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def count_params(params: dict, weights_only: bool = False) -> int:
    mask = weight_matrix_mask(params)
    return sum(int(x.size) for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m or not weights_only)


__all__ = [
    "Actor", "Critic", "TwinCritic", "OfficialLayerNorm", "TorchDense", "normalize_unbiased",
    "make_actor", "make_critic", "init_actor", "init_critic", "init_population", "apply_actor",
    "apply_critic", "weight_matrix_mask", "count_params", "to_torch_state_dict", "from_torch_state_dict",
]
