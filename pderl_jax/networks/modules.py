"""The official PDERL/ERL networks as flax modules, and the plain MLPs of other learners.

Layer names follow the official PyTorch code (`w_l1`, `lnorm1`, ..., `w_out`) so that
parameters map one-to-one onto its state dicts (see `torch_layout.py`). The activation, the
widths, LayerNorm and the output layer's init scale are settings (`NetworkConfig`): the
official values give the official networks; the TD3 authors' are 400-300 ReLU MLPs without
LayerNorm, whose critic reads the state and action concatenated (`ConcatCritic`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LAYER_NORM_EPS = 1e-6


class TorchDense(nn.Module):
    """`nn.Dense` with PyTorch's default `nn.Linear` init: kernel and bias ~ U(+-1/sqrt(fan_in)), x `init_scale`.

    (flax's bias initialisers never see the fan-in, hence a module of its own.)
    """

    features: int
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        bound = 1.0 / jnp.sqrt(x.shape[-1])
        init = lambda key, shape: self.init_scale * jax.random.uniform(key, shape, jnp.float32, -bound, bound)
        kernel = self.param("kernel", init, (x.shape[-1], self.features))
        bias = self.param("bias", init, (self.features,))
        return x @ kernel + bias


class OfficialLayerNorm(nn.Module):
    """ERL/PDERL's LayerNorm: unbiased std, eps added *outside* the square root.

    y = gamma * (x - mean) / (std_unbiased + 1e-6) + beta. Not the same as flax/torch LayerNorm.
    """

    eps: float = LAYER_NORM_EPS

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (features,))
        beta = self.param("beta", nn.initializers.zeros, (features,))
        return gamma * normalize_unbiased(x, self.eps) + beta


def normalize_unbiased(x, eps: float = LAYER_NORM_EPS):
    """(x - mean) / (unbiased std + eps) over the last axis."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.sum(centred * centred, axis=-1, keepdims=True) / (x.shape[-1] - 1)
    return centred / (jnp.sqrt(var) + eps)


def elu(x):
    """ELU (alpha 1) as exp(x) - 1 on the negative side.

    Same values as `jax.nn.elu` up to float32 rounding (absolute error below 1e-7), but XLA's
    CPU `exp` is vectorised where `expm1` is not, which matters in the critic's hot loop.
    """
    return jnp.where(x > 0, x, jnp.exp(jnp.minimum(x, 0.0)) - 1.0)


def relu(x):
    return jnp.maximum(x, 0.0)


ACTIVATIONS = {"tanh": jnp.tanh, "relu": relu, "elu": elu}


class Actor(nn.Module):
    """Deterministic policy: [Linear -> (LayerNorm) -> activation] x len(hidden_sizes) -> Linear -> tanh.

    Official: tanh with LayerNorm, 128-128. `output_init_scale=0.1` gives the RL actor's init
    (official `Actor(init=True)`); population members use 1.0.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (128, 128)
    use_layer_norm: bool = True
    output_init_scale: float = 1.0
    activation: str = "tanh"

    @nn.compact
    def __call__(self, state):
        h = state
        for i, width in enumerate(self.hidden_sizes, start=1):
            h = TorchDense(width, name=f"w_l{i}")(h)
            if self.use_layer_norm:
                h = OfficialLayerNorm(name=f"lnorm{i}")(h)
            h = ACTIVATIONS[self.activation](h)
        return jnp.tanh(TorchDense(self.action_dim, self.output_init_scale, name="w_out")(h))


class Critic(nn.Module):
    """ERL/PDERL Q-network: elu(Ws s) ++ elu(Wa a) -> Linear -> LayerNorm -> elu -> Linear (x0.1).

    The state and the action enter through branches of their own ("split" layout).
    """

    input_width: int = 200
    hidden_width: int = 300
    use_layer_norm: bool = True
    output_init_scale: float = 0.1
    activation: str = "elu"

    @nn.compact
    def __call__(self, state, action):
        act = ACTIVATIONS[self.activation]
        hs = act(TorchDense(self.input_width, name="w_state_l1")(state))
        ha = act(TorchDense(self.input_width, name="w_action_l1")(action))
        h = TorchDense(self.hidden_width, name="w_l2")(jnp.concatenate([hs, ha], axis=-1))
        if self.use_layer_norm:
            h = OfficialLayerNorm(name="lnorm2")(h)
        h = act(h)
        q = TorchDense(1, self.output_init_scale, name="w_out")(h)
        return q[..., 0]


class ConcatCritic(nn.Module):
    """Q-network on [state, action] concatenated: [Linear -> (LayerNorm) -> activation] x n -> Linear.

    The TD3 authors' critic (400-300 ReLU, no LayerNorm, PyTorch's default init) and DDPG's in
    most later code ("concat" layout).
    """

    hidden_sizes: Sequence[int] = (400, 300)
    use_layer_norm: bool = False
    output_init_scale: float = 1.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, state, action):
        h = jnp.concatenate([state, action], axis=-1)
        for i, width in enumerate(self.hidden_sizes, start=1):
            h = TorchDense(width, name=f"w_l{i}")(h)
            if self.use_layer_norm:
                h = OfficialLayerNorm(name=f"lnorm{i}")(h)
            h = ACTIVATIONS[self.activation](h)
        return TorchDense(1, self.output_init_scale, name="w_out")(h)[..., 0]


class TwinCritic(nn.Module):
    """Two independent critics (TD3) of one architecture (`single`, an unbound `Critic` or
    `ConcatCritic`); parameters stacked on a leading axis of size 2 under "critics". Returns
    Q-values of shape [2, ...batch].
    """

    single: nn.Module = Critic()

    @nn.compact
    def __call__(self, state, action):
        ensemble = nn.vmap(
            type(self.single),
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=2,
        )
        settings = {f.name: getattr(self.single, f.name) for f in dataclasses.fields(self.single)
                    if f.init and f.name not in ("parent", "name")}
        return ensemble(**settings, name="critics")(state, action)
