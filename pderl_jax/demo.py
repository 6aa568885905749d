"""A component demo on a synthetic one-step task (until the environment loop lands).

Each "episode" is one step: a state s ~ N(0, I), reward -||a - pi*(s)||^2 for a fixed hidden
target policy pi*, done = 1. Fitness is the mean reward over a batch of states. The demo runs
the real components — stacked population, genetic memories, replay buffer, DDPG/TD3 learner,
selection, distillation/n-point crossover, proximal/Gaussian mutation, RL sync — and prints
how the population and the learner improve.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from pderl_jax.buffers import Transition, memories_add, memories_init, ring_add, ring_init
from pderl_jax.config import Config
from pderl_jax.learner.ddpg import Learner
from pderl_jax.memory import format_memory_estimate, memory_estimate
from pderl_jax.networks import apply_actor, init_population, make_actor
from pderl_jax.operators.evolution import evolve, sync_rl_actor
from pderl_jax.operators.selection import rl_sync_slot

OBS_DIM, ACTION_DIM = 17, 6  # HalfCheetah sizes
EPISODES_PER_MEMBER = 100


def run_demo(config: Config, generations: int = 5, print_fn=print) -> list[dict]:
    """Run `generations` generations on the synthetic task; returns one stats dict per generation."""
    print_fn(format_memory_estimate(memory_estimate(config, OBS_DIM, ACTION_DIM)))
    evo = config.evolution
    actor = make_actor(ACTION_DIM, config.network)
    learner = Learner(OBS_DIM, ACTION_DIM, config.learner, config.network)
    apply = lambda params, states: apply_actor(actor, params, states)

    key = jax.random.key(config.seed)
    key, pop_key, learner_key, task_key = jax.random.split(key, 4)
    target_policy = jax.random.normal(task_key, (OBS_DIM, ACTION_DIM)) / jnp.sqrt(OBS_DIM)
    population = init_population(pop_key, actor, OBS_DIM, evo.pop_size)
    memories = memories_init(evo.pop_size, evo.genetic_memory_capacity, OBS_DIM, ACTION_DIM)
    rl_memory = memories_init(1, evo.genetic_memory_capacity, OBS_DIM, ACTION_DIM)
    replay = ring_init(config.learner.replay_capacity, OBS_DIM, ACTION_DIM)
    learner_state = learner.init(learner_key)

    def episodes(key, actions_fn, count):
        states = jax.random.normal(key, (count, OBS_DIM))
        actions = actions_fn(states)
        reward = -jnp.sum((actions - jnp.tanh(states @ target_policy)) ** 2, axis=-1)
        ones = jnp.ones((count,))
        return Transition(states, actions, states, reward, ones, jnp.zeros((count,))), reward

    @jax.jit
    def generation(key, population, memories, rl_memory, replay, learner_state, rl_slot, sync):
        eval_key, evolve_key, explore_key, train_key = jax.random.split(key, 4)
        items, rewards = jax.vmap(lambda k, p: episodes(k, lambda s: apply(p, s), EPISODES_PER_MEMBER))(
            jax.random.split(eval_key, evo.pop_size), population)
        fitness = rewards.mean(axis=1)
        valid = jnp.ones(rewards.shape, bool)
        memories = memories_add(memories, items, valid)
        replay = ring_add(replay, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), items))
        population, memories, info = evolve(evolve_key, population, memories, fitness, apply,
                                            lambda s, a: learner.q1(learner_state.critic, s, a),
                                            evo, config.crossover, config.mutation, rl_slot)

        def noisy(states):
            noise = 0.1 * jax.random.normal(explore_key, (states.shape[0], ACTION_DIM))
            return jnp.clip(learner.act(learner_state.actor, states) + noise, -1.0, 1.0)

        rl_items, _ = episodes(explore_key, noisy, EPISODES_PER_MEMBER)
        rl_memory = memories_add(rl_memory, jax.tree.map(lambda x: x[None], rl_items), valid[:1])
        replay = ring_add(replay, rl_items)
        frames = (evo.pop_size + 1) * EPISODES_PER_MEMBER
        learner_state, metrics = learner.train(learner_state, replay, train_key, frames)
        _, rl_rewards = episodes(jax.random.fold_in(train_key, 1), lambda s: learner.act(learner_state.actor, s), 256)

        slot = rl_sync_slot(fitness, info.plan.elite_slots, evo.protect_all_elites)
        synced, synced_memories = sync_rl_actor(population, memories, learner_state.actor,
                                                jax.tree.map(lambda x: x[0], rl_memory), slot)
        population = jax.tree.map(lambda a, b: jnp.where(sync, a, b), synced, population)
        memories = jax.tree.map(lambda a, b: jnp.where(sync, a, b), synced_memories, memories)
        stats = dict(best=fitness.max(), mean=fitness.mean(), rl=rl_rewards.mean(),
                     critic_loss=metrics.critic_loss, rl_outcome=info.plan.rl_outcome)
        return population, memories, rl_memory, replay, learner_state, jnp.where(sync, slot, -1), stats

    rl_slot = jnp.int32(-1)
    history = []
    for gen in range(1, generations + 1):
        key, gen_key = jax.random.split(key)
        start = time.perf_counter()
        sync = jnp.bool_(gen % evo.sync_period == 0)
        population, memories, rl_memory, replay, learner_state, rl_slot, stats = generation(
            gen_key, population, memories, rl_memory, replay, learner_state, rl_slot, sync)
        stats = {k: float(v) for k, v in stats.items()}
        stats["seconds"] = time.perf_counter() - start
        history.append(stats)
        print_fn(f"generation {gen}: best fitness {stats['best']:.3f}  population mean {stats['mean']:.3f}  "
                 f"RL actor {stats['rl']:.3f}  critic loss {stats['critic_loss']:.4f}  "
                 f"({stats['seconds']:.1f} s{', compile included' if gen == 1 else ''})")
    return history
