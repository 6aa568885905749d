"""Conversion between flax parameters and the official PyTorch state-dict layout.

A state dict here is an ordered `{name: numpy array}` named as in the official code
(`w_l1.weight`, `w_l1.bias`, `lnorm1.gamma`, ...). PyTorch stores a Linear weight as
(out, in); flax stores the kernel as (in, out), so kernels are transposed. No torch needed:
load an official `.pkl`/`.pt` with torch yourself and pass `{k: v.numpy()}`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_TO_TORCH = {"kernel": "weight", "bias": "bias", "gamma": "gamma", "beta": "beta"}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}
_LEAF_ORDER = {"kernel": 0, "bias": 1, "gamma": 0, "beta": 1}


def _layer_position(name: str) -> tuple[float, int]:
    """Official registration order: w_state_l1, w_action_l1, then w_l{i}, lnorm{i} by i, w_out last."""
    if name == "w_out":
        return (float("inf"), 0)
    for prefix, rank in (("w_state_l", 0), ("w_action_l", 1), ("w_l", 0), ("lnorm", 2)):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return (int(name[len(prefix):]), rank)
    raise ValueError(f"unknown layer name {name!r} for the official state-dict layout")


def official_actor_layout_problem(network) -> str | None:
    """Why the official PyTorch `Actor` cannot hold an actor of `network` (a `NetworkConfig`), or None.

    That class has two tanh hidden layers (`w_l1`, `w_l2`) with LayerNorm on or off (`args.use_ln`);
    another activation loads without error but computes another function.
    """
    if network.actor_activation != "tanh":
        return (f"network.actor_activation = {network.actor_activation!r}, but the official actor's hidden layers "
                "are tanh; set network.actor_activation=tanh (or --preset official)")
    if len(network.actor_hidden) != 2:
        return (f"network.actor_hidden = {list(network.actor_hidden)}, but the official actor has two hidden layers; "
                "set network.actor_hidden=W1,W2")
    return None


def to_torch_state_dict(params: Mapping[str, Any]) -> "OrderedDict[str, np.ndarray]":
    """Flax params of an `Actor` or `Critic` -> official state dict, in the official parameter order.

    The order is rebuilt from the layer names, since JAX transformations return dicts with
    sorted keys.
    """
    state = OrderedDict()
    for layer in sorted(params, key=_layer_position):
        leaves = params[layer]
        for leaf in sorted(leaves, key=_LEAF_ORDER.__getitem__):
            value = np.asarray(leaves[leaf], dtype=np.float32)
            state[f"{layer}.{_TO_TORCH[leaf]}"] = (value.T if leaf == "kernel" else value).copy()
    return state


def from_torch_state_dict(state_dict: Mapping[str, Any], like: Mapping[str, Any] | None = None) -> dict:
    """Official state dict -> flax params. With `like` (a params tree) names and shapes are checked."""
    params: dict[str, dict[str, jax.Array]] = {}
    for name, value in state_dict.items():
        layer, _, leaf = name.rpartition(".")
        if leaf not in _FROM_TORCH or not layer:
            raise ValueError(f"unexpected state-dict entry {name!r}: expected '<layer>.weight|bias|gamma|beta'")
        value = np.asarray(value, dtype=np.float32)
        flax_leaf = _FROM_TORCH[leaf]
        params.setdefault(layer, {})[flax_leaf] = jnp.asarray(value.T if flax_leaf == "kernel" else value)
    if like is not None:
        expected = jax.tree.map(jnp.shape, dict(like))
        got = jax.tree.map(jnp.shape, params)
        if expected != got:
            raise ValueError(
                f"state dict does not match the network: expected shapes {expected}, got {got}; "
                "check the task's observation/action sizes and the network widths"
            )
    return params
