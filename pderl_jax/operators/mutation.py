"""Mutations: PDERL's proximal mutation (SM-G-SUM) and ERL's Gaussian mutation.

Both perturb only the Linear weight matrices (flax kernels), as the official code does;
biases and LayerNorm gamma/beta are never touched, and the genetic memory is kept.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from pderl_jax.buffers.ring import RingBuffer
from pderl_jax.buffers.sampling import sample_distinct
from pderl_jax.config import EvolutionConfig
from pderl_jax.networks import ActorApply, merge_kernels, weight_matrices


def output_sensitivity(params: dict, states: jax.Array, valid: jax.Array, apply_actor: ActorApply,
                       reduce: str = "sum") -> dict:
    """Paper Eq. 1 per weight: sqrt(sum_k (d/dtheta sum_i mu(s_i)_k)^2), with the official clamps.

    The gradient of each action dimension's batch-summed output comes from one Jacobian
    (A backward passes). `reduce="mean"` divides the batch sum by the batch size. Clamps:
    exact zeros -> 1, values below 0.01 -> 0.01.
    """
    kernels = weight_matrices(params)
    count = jnp.maximum(jnp.sum(valid), 1).astype(states.dtype)

    def summed_output(k):
        actions = apply_actor(merge_kernels(params, k), states)
        total = jnp.sum(actions * valid[:, None], axis=0)
        return total / count if reduce == "mean" else total

    jacobian = jax.jacrev(summed_output)(kernels)  # leaves: [A, *kernel_shape]

    def clamp(j):
        sens = jnp.sqrt(jnp.sum(j * j, axis=0))
        sens = jnp.where(sens == 0.0, 1.0, sens)
        return jnp.where(sens < 0.01, 0.01, sens)

    return jax.tree.map(clamp, jacobian)


def proximal_mutation(key: jax.Array, params: dict, memory: RingBuffer, apply_actor: ActorApply,
                      config: EvolutionConfig) -> dict:
    """theta <- theta + N(0, sigma^2) / sensitivity on the weight matrices (paper Algorithm 2).

    The sensitivity uses min(N_M, |memory|) states drawn without replacement from the member's
    own genetic memory. With `mutation_sigma_noise > 0` sigma itself is drawn from
    N(mutation_sigma, mutation_sigma_noise^2) (official `-mut_noise`, 0.02).
    """
    sample_key, sigma_key, noise_key = jax.random.split(key, 3)
    rows, valid = sample_distinct(sample_key, memory.size, config.proximal_batch_size)
    states = memory.data.state[rows]
    sensitivity = output_sensitivity(params, states, valid, apply_actor, config.sensitivity_reduce)
    sigma = config.mutation_sigma + config.mutation_sigma_noise * jax.random.normal(sigma_key)
    kernels = weight_matrices(params)
    leaves, treedef = jax.tree.flatten(kernels)
    noise_keys = jax.tree.unflatten(treedef, list(jax.random.split(noise_key, len(leaves))))
    mutated = jax.tree.map(
        lambda w, s, k: w + sigma * jax.random.normal(k, w.shape, w.dtype) / s, kernels, sensitivity, noise_keys
    )
    return merge_kernels(params, mutated)


def gaussian_mutation(key: jax.Array, params: dict, config: EvolutionConfig) -> dict:
    """ERL's `mutate_inplace` on every weight matrix, applied sequentially as in the original.

    Each matrix is mutated with probability E[min(1, 2U)] = 0.75; then n ~ U{0..ceil(f*size)-1}
    positions (with replacement) get, in order: super mutation w += N(0, (10 w)^2) w.p. 0.05,
    reset w = N(0, 1) w.p. 0.05, else w += N(0, (0.1 w)^2); clipped to +-1e6.
    """
    kernels = weight_matrices(params)
    leaves, treedef = jax.tree.flatten(kernels)
    keys = jax.random.split(key, len(leaves))
    return merge_kernels(params, jax.tree.unflatten(treedef, [
        _mutate_matrix(k, w, config) for k, w in zip(keys, leaves)
    ]))


def _mutate_matrix(key, weights, config: EvolutionConfig):
    size = weights.size
    max_events = int(math.ceil(config.gaussian_fraction * size))
    gate_key, prob_key, count_key, pos_key, kind_key, normal_key = jax.random.split(key, 6)
    mutate = jax.random.uniform(gate_key) < 2.0 * jax.random.uniform(prob_key)
    count = jnp.where(mutate, jax.random.randint(count_key, (), 0, max_events), 0)
    positions = jax.random.randint(pos_key, (max_events,), 0, size)
    kinds = jax.random.uniform(kind_key, (max_events,))
    normals = jax.random.normal(normal_key, (max_events,))
    super_p = config.super_mutation_prob
    reset_p = super_p + config.reset_prob

    def event(i, flat):
        w = flat[positions[i]]
        u, z = kinds[i], normals[i]
        new = jnp.where(
            u < super_p,
            w + z * config.super_mutation_strength * jnp.abs(w),
            jnp.where(u < reset_p, z, w + z * config.gaussian_strength * jnp.abs(w)),
        )
        return flat.at[positions[i]].set(jnp.clip(new, -1e6, 1e6))

    flat = lax.fori_loop(0, count, event, weights.reshape(-1))
    return flat.reshape(weights.shape)
