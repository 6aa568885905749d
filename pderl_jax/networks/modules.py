"""The official PDERL/ERL networks as flax modules.

Layer names follow the official PyTorch code (`w_l1`, `lnorm1`, ..., `w_out`) so that
parameters map one-to-one onto its state dicts (see `torch_layout.py`).
"""

from __future__ import annotations

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


class Actor(nn.Module):
    """Deterministic policy: [Linear -> LayerNorm -> tanh] x len(hidden_sizes) -> Linear -> tanh.

    `output_init_scale=0.1` gives the RL actor's init (official `Actor(init=True)`); population
    members use 1.0.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (128, 128)
    use_layer_norm: bool = True
    output_init_scale: float = 1.0

    @nn.compact
    def __call__(self, state):
        h = state
        for i, width in enumerate(self.hidden_sizes, start=1):
            h = TorchDense(width, name=f"w_l{i}")(h)
            if self.use_layer_norm:
                h = OfficialLayerNorm(name=f"lnorm{i}")(h)
            h = jnp.tanh(h)
        return jnp.tanh(TorchDense(self.action_dim, self.output_init_scale, name="w_out")(h))


class Critic(nn.Module):
    """ERL/PDERL Q-network: elu(Ws s) ++ elu(Wa a) -> Linear -> LayerNorm -> elu -> Linear (x0.1)."""

    input_width: int = 200
    hidden_width: int = 300
    use_layer_norm: bool = True
    output_init_scale: float = 0.1

    @nn.compact
    def __call__(self, state, action):
        hs = elu(TorchDense(self.input_width, name="w_state_l1")(state))
        ha = elu(TorchDense(self.input_width, name="w_action_l1")(action))
        h = TorchDense(self.hidden_width, name="w_l2")(jnp.concatenate([hs, ha], axis=-1))
        if self.use_layer_norm:
            h = OfficialLayerNorm(name="lnorm2")(h)
        h = elu(h)
        q = TorchDense(1, self.output_init_scale, name="w_out")(h)
        return q[..., 0]


class TwinCritic(Critic):
    """Two independent critics (TD3) with `Critic`'s settings; parameters stacked on a leading
    axis of size 2 under "critics". Returns Q-values of shape [2, ...batch].
    """

    @nn.compact
    def __call__(self, state, action):
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=2,
        )
        return ensemble(
            self.input_width, self.hidden_width, self.use_layer_norm, self.output_init_scale,
            name="critics",
        )(state, action)
