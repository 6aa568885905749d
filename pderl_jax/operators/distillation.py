"""Q-filtered distillation crossover (paper Algorithm 1, official `distilation_crossover`).

The child gets the latest kappa/2 transitions of each parent (shuffled), starts from parent 2's
weights (the less fit one under greedy pairing) and is trained with a fresh Adam to imitate, in
each state, the action of the parent that the RL critic values more.

The parents and the critic are frozen during distillation, so the Q-filtered targets of all
kappa memory states are computed once up front; each of the ~750 steps then only runs the
child's forward and backward pass on a gathered batch. All batches are drawn before the loop
(static shape epochs x (kappa // N_C)); the loop runs epochs x (size // N) of them, which is
fewer while memories are not full.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from pderl_jax.buffers.genetic_memory import crossover_memory
from pderl_jax.buffers.sampling import sample_distinct
from pderl_jax.config import EvolutionConfig
from pderl_jax.networks import ActorApply, QFunction, adam
from pderl_jax.operators.population import Population


@struct.dataclass
class DistillationTargets:
    """Per memory state: the action to imitate and its weight (0 drops the state)."""

    actions: jax.Array  # [kappa, A]
    weights: jax.Array  # [kappa]
    from_parent1: jax.Array  # [kappa] bool: parent 1's action won


@struct.dataclass
class DistillationInfo:
    behaviour_mse: jax.Array  # official `policy_mse` of the last step: mean squared BC error
    num_steps: jax.Array  # Adam steps actually taken
    parent1_share: jax.Array  # fraction of memory states where parent 1's action won


def q_filtered_targets(states: jax.Array, parent1: dict, parent2: dict, apply_actor: ActorApply,
                       q_fn: QFunction, loss: str = "official") -> DistillationTargets:
    """Which parent to imitate in each state.

    official: parent 1 where Q(s, a1) - Q(s, a2) > 0, else parent 2 (ties go to parent 2).
    paper: as official, but states with Q(s, a1) == Q(s, a2) get weight 0.
    """
    a1 = apply_actor(parent1, states)
    a2 = apply_actor(parent2, states)
    q1 = q_fn(states, a1)
    q2 = q_fn(states, a2)
    prefer_first = (q1 - q2) > 0
    actions = jnp.where(prefer_first[:, None], a1, a2)
    weights = jnp.ones_like(q1) if loss == "official" else (q1 != q2).astype(q1.dtype)
    return DistillationTargets(actions=lax.stop_gradient(actions), weights=lax.stop_gradient(weights),
                               from_parent1=prefer_first)


def distillation_loss(child_actions: jax.Array, targets: jax.Array, weights: jax.Array, valid: jax.Array,
                      loss: str = "official") -> jax.Array:
    """Behaviour-cloning loss on one batch (rows masked by `valid`).

    official: sum_{i,d} (child - target)^2 + mean_{i,d} child^2   (L2 term 1/A of the paper's)
    paper:    sum_i w_i ||child_i - target_i||^2 + (1/N_C) sum_i ||child_i||^2
    """
    rows = valid.astype(child_actions.dtype)
    n = jnp.maximum(jnp.sum(rows), 1.0)
    squared_error = jnp.sum((child_actions - targets) ** 2, axis=-1)
    bc = jnp.sum(rows * weights * squared_error)
    squared_norm = jnp.sum(rows * jnp.sum(child_actions ** 2, axis=-1))
    l2 = squared_norm / (n * child_actions.shape[-1]) if loss == "official" else squared_norm / n
    return bc + l2


def distill_child(key: jax.Array, parent1: Population, parent2: Population, apply_actor: ActorApply,
                  q_fn: QFunction, config: EvolutionConfig) -> tuple[Population, DistillationInfo]:
    """One distillation crossover of two members (`Population.take(slot)`): the child and diagnostics."""
    memory_key, train_key = jax.random.split(key)
    memory = crossover_memory(memory_key, parent1.memories, parent2.memories, config.shuffle_child_memory)
    states = memory.data.state
    targets = q_filtered_targets(states, parent1.members, parent2.members, apply_actor, q_fn,
                                 config.distillation_loss)

    batch_size = config.distill_batch_size
    capacity = memory.capacity
    batch = jnp.minimum(batch_size, memory.size)
    iters_per_epoch = jnp.where(batch > 0, memory.size // jnp.maximum(batch, 1), 0)
    num_steps = config.distill_epochs * iters_per_epoch
    max_steps = config.distill_epochs * max(1, capacity // batch_size)
    optimizer = adam(config.distill_lr)

    # All batches are drawn up front (each without replacement, independently of the others).
    step_keys = jax.random.split(train_key, max_steps)
    all_rows, all_valid = jax.vmap(lambda k: sample_distinct(k, memory.size, batch_size))(step_keys)

    def loss_fn(params, rows, valid):
        child_actions = apply_actor(params, states[rows])
        batch_targets = targets.actions[rows]
        loss = distillation_loss(child_actions, batch_targets, targets.weights[rows], valid,
                                 config.distillation_loss)
        mse = jnp.sum(valid[:, None] * (child_actions - batch_targets) ** 2) / jnp.maximum(
            jnp.sum(valid) * child_actions.shape[-1], 1)
        return loss, mse

    def step(i, carry):
        params, opt_state, _ = carry
        (_, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, all_rows[i], all_valid[i])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, mse

    init = (parent2.members, optimizer.init(parent2.members), jnp.float32(jnp.nan))
    child, _, mse = lax.fori_loop(0, num_steps, step, init)
    valid_states = jnp.arange(capacity) < memory.size
    share = jnp.sum(valid_states & targets.from_parent1) / jnp.maximum(memory.size, 1)
    info = DistillationInfo(behaviour_mse=mse, num_steps=num_steps, parent1_share=share)
    return Population(members=child, memories=memory), info


def distill_children(key: jax.Array, population: Population, parent1_slots: jax.Array, parent2_slots: jax.Array,
                     active: jax.Array, apply_actor: ActorApply, q_fn: QFunction,
                     config: EvolutionConfig) -> tuple[Population, DistillationInfo]:
    """One child per (parent1, parent2) slot pair; inactive pairs are skipped and return parent 2.

    `config.children_in_parallel` children are vmapped at a time (0 = auto: one at a time on
    CPU, where batched small matmuls are slower than a sequence of plain ones, all at once on
    accelerators). Run one at a time, an inactive child costs nothing.
    """
    num_children = parent1_slots.shape[0]
    chex.assert_shape([parent1_slots, parent2_slots, active], (num_children,))
    chex.assert_tree_shape_prefix(population, (population.size,))
    parallel = resolve_parallelism(config.children_in_parallel, num_children)

    def one(inputs):
        child_key, i, j, is_active = inputs
        parent1, parent2 = population.take(i), population.take(j)

        def run(_):
            return distill_child(child_key, parent1, parent2, apply_actor, q_fn, config)

        def skip(_):
            nothing = DistillationInfo(behaviour_mse=jnp.float32(jnp.nan), num_steps=jnp.int32(0),
                                       parent1_share=jnp.float32(jnp.nan))
            return parent2, nothing

        return lax.cond(is_active, run, skip, None)

    inputs = (jax.random.split(key, num_children), parent1_slots, parent2_slots, active)
    return lax.map(one, inputs, batch_size=None if parallel == 1 else parallel)


def resolve_parallelism(requested: int, total: int) -> int:
    """How many operator applications to vmap at once (0 = auto by backend)."""
    if requested <= 0:
        requested = 1 if jax.default_backend() == "cpu" else total
    return max(1, min(requested, total))
