"""Actor and critic networks (official architectures and plain MLPs), population init and state-dict I/O."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from pderl_jax.config import NetworkConfig
from pderl_jax.networks.modules import (ACTIVATIONS, Actor, ConcatCritic, Critic, OfficialLayerNorm, TorchDense, TwinCritic,
                                       normalize_unbiased)
from pderl_jax.interop.torch_layout import from_torch_state_dict, to_torch_state_dict


def make_actor(action_dim: int, config: NetworkConfig = NetworkConfig(), rl: bool = False) -> Actor:
    """Population actor, or with `rl=True` the RL actor whose output layer starts x0.1."""
    return Actor(
        action_dim=action_dim,
        hidden_sizes=tuple(config.actor_hidden),
        use_layer_norm=config.use_layer_norm,
        output_init_scale=config.rl_actor_output_scale if rl else 1.0,
        activation=config.actor_activation,
    )


def make_critic(config: NetworkConfig = NetworkConfig(), twin: bool = False) -> Critic | ConcatCritic | TwinCritic:
    """The Q-network of `config.critic_layout` ("split": the official branches; "concat"), or two (TD3)."""
    if config.critic_layout == "concat":
        single = ConcatCritic(tuple(config.critic_hidden), config.use_layer_norm, config.critic_output_scale,
                              config.critic_activation)
    else:
        single = Critic(config.critic_input_width, config.critic_hidden_width, config.use_layer_norm,
                        config.critic_output_scale, config.critic_activation)
    return TwinCritic(single) if twin else single


def init_actor(key: jax.Array, actor: Actor, obs_dim: int) -> dict:
    return actor.init(key, jnp.zeros((obs_dim,), jnp.float32))["params"]


def init_critic(key: jax.Array, critic, obs_dim: int, action_dim: int) -> dict:
    return critic.init(key, jnp.zeros((1, obs_dim), jnp.float32), jnp.zeros((1, action_dim), jnp.float32))["params"]


def init_population(key: jax.Array, actor: Actor, obs_dim: int, size: int) -> dict:
    """`size` independently initialised actors as one pytree stacked on axis 0."""
    return jax.vmap(lambda k: init_actor(k, actor, obs_dim))(jax.random.split(key, size))


# The operators see networks only through these two signatures.
ActorApply = Callable[[dict, jax.Array], jax.Array]  # (params, states[N, obs]) -> actions[N, act]
QFunction = Callable[[jax.Array, jax.Array], jax.Array]  # (states[N, obs], actions[N, act]) -> Q[N]


def adam(learning_rate) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults (betas 0.9/0.999, eps 1e-8, no weight decay): the official optimiser
    of the learner's networks and of the distillation crossover."""
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)


def apply_actor(actor: Actor, params: dict, states: jax.Array) -> jax.Array:
    return actor.apply({"params": params}, states)


def apply_critic(critic, params: dict, states: jax.Array, actions: jax.Array) -> jax.Array:
    return critic.apply({"params": params}, states, actions)


WEIGHT_MATRIX = "kernel"  # the leaf name of a Linear weight matrix; biases and LayerNorm gamma/beta are the rest


def weight_matrix_mask(params: dict) -> dict:
    """True for Linear weight matrices, False for biases and LayerNorm gamma/beta.

    Works at any nesting depth (a twin critic nests its layers under "critics"). The official
    proximal and Gaussian mutations perturb only these leaves.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == WEIGHT_MATRIX, params)


def weight_matrices(params: dict) -> dict:
    """The Linear weight matrices of an actor's `params`, by layer name (what the mutations perturb)."""
    return {layer: {WEIGHT_MATRIX: leaves[WEIGHT_MATRIX]}
            for layer, leaves in params.items() if WEIGHT_MATRIX in leaves}


def merge_kernels(params: dict, kernels: dict) -> dict:
    """`params` with the weight matrices of `kernels` put back (the inverse of `weight_matrices`)."""
    return {layer: {**leaves, **kernels.get(layer, {})} for layer, leaves in params.items()}


def count_params(params: dict, weights_only: bool = False) -> int:
    mask = weight_matrix_mask(params)
    return sum(int(x.size) for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m or not weights_only)


__all__ = [
    "ACTIVATIONS", "ActorApply", "QFunction", "Actor", "Critic", "ConcatCritic", "TwinCritic", "OfficialLayerNorm", "TorchDense",
    "normalize_unbiased", "make_actor", "make_critic", "init_actor", "init_critic", "init_population",
    "adam", "apply_actor", "apply_critic", "WEIGHT_MATRIX", "weight_matrix_mask", "weight_matrices", "merge_kernels",
    "count_params", "to_torch_state_dict", "from_torch_state_dict",
]
