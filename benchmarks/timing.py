"""Shared timing helper of the benchmark scripts."""

from __future__ import annotations

import time

import jax


def best_time(fn, *args, repeats: int = 2) -> float:
    """Best wall time of `repeats` calls of `fn(*args)` after one untimed call (compilation)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def time_generations(trainer, generations: int, seed: int = 0) -> tuple[dict, object, object]:
    """Cold compile of the jitted generation, one warm-up generation, then `generations` timed ones.

    Compiled without the persistent cache (none is enabled here), so the figure is a user's
    first run. Returns the figures, the compiled step and the state after the timed generations.
    """
    state = jax.jit(trainer.init)(jax.random.key(seed))
    jax.block_until_ready(state)
    start = time.perf_counter()
    generation = jax.jit(trainer.generation, donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - start
    state, _ = generation(state)  # warm-up: fills the replay buffer past learning_starts
    jax.block_until_ready(state)
    frames, start = 0, time.perf_counter()
    for _ in range(generations):
        state, metrics = generation(state)
        frames += int(metrics.generation_frames)  # forces completion of the generation
    wall = time.perf_counter() - start
    figures = {"compile_s": compile_s, "seconds_per_generation": wall / generations,
               "frames_per_generation": frames / generations, "frames_per_s": frames / wall}
    return figures, generation, state


def evolutionary_part(trainer):
    """fn(state, key) -> (population, frames): evaluation, genetic memories and `evolve` of a generation.

    The population's side alone (no learner updates, no test episodes, no RL exploration): what
    grows with the population size.
    """
    from pderl_jax.buffers import memories_add
    from pderl_jax.operators.evolution import evolve

    config = trainer.config

    def step(state, key):
        eval_key, evolve_key = jax.random.split(key)
        population = state.evolution.population
        evaluation = trainer.evaluate_population(eval_key, population.members, config.evolution.num_evals)
        population = population.replace(memories=memories_add(population.memories, evaluation.transitions,
                                                              evaluation.valid))
        q_fn = lambda s, a: trainer.learner.q1(state.learner.critic, s, a)
        population, _ = evolve(evolve_key, population, evaluation.fitness, trainer.apply_actor, q_fn, config)
        return population, evaluation.frames

    return step


def time_evolutionary_part(trainer, repeats: int = 2) -> dict:
    """Compile of `evolutionary_part(trainer)` and its best time, once the genetic memories are full."""
    state = jax.jit(trainer.init)(jax.random.key(0))
    start = time.perf_counter()
    step = jax.jit(evolutionary_part(trainer)).lower(state, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - start
    population, frames = step(state, jax.random.key(1))  # memories filled: full-size distillation
    state = state.replace(evolution=state.evolution.replace(population=population))
    seconds = best_time(step, state, jax.random.key(2), repeats=repeats)
    return {"pop_size": trainer.config.evolution.pop_size, "seconds": seconds, "compile_s": compile_s,
            "frames": int(frames), "frames_per_s": int(frames) / seconds}
