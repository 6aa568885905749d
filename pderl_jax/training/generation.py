"""One PDERL generation as a pure function (official `Agent.train`; docs/paper-and-official-code.md,
"One generation, in order").

    fitness, exploration = rollout(population, RL actor + OU noise)  # xi episodes each + 1; stored
    population   = evolve(population, fitness)     # selection, distillation, proximal mutation
    learner      = train(learner, replay, frames)  # one update per stored frame
    champion_test, rl_test = rollout(best member, RL actor)          # 5 episodes each, free
    every omega generations: copy the RL actor into the worst slot

The official code runs four rollouts in turn (evaluation, champion test, exploration, RL test);
those that do not depend on each other share one batched rollout here, so a generation
compiles and steps the physics twice. Each episode keeps the initial state and noise keys it
had as a rollout of its own, so the results equal the four separate rollouts'.

Modes erl/perl/derl swap the operators inside `evolve`; everything else is shared. The
learner-only modes (ddpg, td3) run `learner_generation`: exploration episode, updates, RL test.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from pderl_jax.buffers import RingBuffer, memories_add, ring_add, ring_init
from pderl_jax.buffers.ring import Transition
from pderl_jax.config import Config, ConfigError
from pderl_jax.envs.rollout import (Environment, Policy, Rollout, episode_major, initial_state_keys, rollout,
                                    side_by_side)
from pderl_jax.learner.off_policy import Learner, LearnerState
from pderl_jax.networks import apply_actor, init_population, make_actor
from pderl_jax.operators.evolution import evolve
from pderl_jax.operators.population import Population, init_members, sync_rl_actor
from pderl_jax.operators.selection import SelectionStats, rl_sync_slot

TEST_EPISODES = 5  # official champion and RL test episodes per generation


@struct.dataclass
class EvolutionState:
    """The evolutionary part of a run: the population and what the RL actor brings to it."""

    population: Population  # members and genetic memories [k, ...]
    champion: dict  # the best member of the latest evaluation (what `champion_test` ran)
    rl_memory: RingBuffer  # the RL actor's genetic memory [kappa, ...]
    selection: SelectionStats
    rl_slot: jax.Array  # slot the RL actor was synced into last generation, -1 if none


@struct.dataclass
class Evaluation:
    """The population's fitness episodes: mean returns and the transitions in storage order."""

    fitness: jax.Array  # [k] mean return over each member's xi episodes
    transitions: Transition  # leaves [k, xi * T, ...], each member's episodes one after another
    valid: jax.Array  # [k, xi * T] the step belongs to a running episode
    frames: jax.Array  # stored steps of all of them


@struct.dataclass
class Exploration:
    """The RL actor's noisy episode: its transitions, their mask, its frames, and the learner state with
    the exploration noise advanced."""

    transitions: Transition  # leaves [T, ...]
    valid: jax.Array  # [T]
    frames: jax.Array
    learner: LearnerState


@struct.dataclass
class TrainState:
    evolution: EvolutionState | None  # None in the learner-only modes (ddpg, td3)
    replay: RingBuffer  # shared replay buffer
    learner: LearnerState
    generation: jax.Array  # generations completed
    frames: jax.Array  # stored environment steps so far (test episodes are free)
    key: jax.Array


@struct.dataclass
class GenerationMetrics:
    frames: jax.Array  # total after this generation
    generation_frames: jax.Array
    fitness: jax.Array  # [k] mean return over the xi trials ([0] without a population)
    champion_test: jax.Array  # the best member's test return (the RL actor's without a population)
    rl_test: jax.Array
    critic_loss: jax.Array
    actor_loss: jax.Array
    synced: jax.Array
    elite_rate: jax.Array
    selected_rate: jax.Array
    discarded_rate: jax.Array


class Trainer:
    """Builds the initial state and the jit-able generation step for one config and environment.

    `self.config` fixes the structure; the steps read every setting from the config they are
    given, which `generation` takes once (possibly traced, to sweep float settings).
    """

    def __init__(self, config: Config, env: Environment):
        if not isinstance(env, Environment):
            raise ConfigError(f"{type(env).__name__} is not a pderl_jax.envs.Environment: subclass it (class "
                              f"{type(env).__name__}(Environment)), which declares every attribute training reads")
        self.config = config
        self.env = env
        self.actor = make_actor(env.action_dim, config.network)
        self.learner = Learner(env.obs_dim, env.action_dim, config.learner, config.network)

    def apply_actor(self, params, states):
        return apply_actor(self.actor, params, states)

    def init(self, key: jax.Array) -> TrainState:
        config, env = self.config, self.env
        key, pop_key, learner_key = jax.random.split(key, 3)
        return TrainState(
            evolution=self.init_evolution(pop_key) if config.has_population else None,
            replay=ring_init(config.learner.replay_capacity, env.obs_dim, env.action_dim),
            learner=self.learner.init(learner_key),
            generation=jnp.int32(0),
            frames=jnp.int32(0),
            key=key,
        )

    def init_evolution(self, key: jax.Array) -> EvolutionState:
        evo, env = self.config.evolution, self.env
        members = init_population(key, self.actor, env.obs_dim, evo.pop_size)
        capacity = evo.genetic_memory_capacity
        return EvolutionState(
            population=init_members(members, capacity, env.obs_dim, env.action_dim),
            champion=jax.tree.map(lambda x: x[0], members),
            rl_memory=ring_init(capacity, env.obs_dim, env.action_dim),
            selection=SelectionStats.zeros(),
            rl_slot=jnp.int32(-1),
        )

    # ------------------------------------------------------------------ steps of a generation
    def population_policy(self, params, obs, *_):
        """Each episode acted by its own member's parameters (params [N, ...])."""
        return jax.vmap(self.apply_actor)(params, obs), params

    def actor_policy(self, params, obs, *_):
        """Every episode acted by one actor, without noise."""
        return self.apply_actor(params, obs), params

    def exploration_policy(self, learner_state: LearnerState, config: Config) -> Policy:
        """The RL actor plus exploration noise on one episode; the noise advances with its steps, never reset.

        The carry is (noise state, frames stored so far): while fewer than `learner.warmup_frames`
        are stored, the action is uniform over the action box instead (TD3's random warm-up).
        """
        warmup = config.learner.warmup_frames

        def policy(carry, obs, step_key, alive):
            noise, frames = carry
            action, acting = self.learner.explore(learner_state.replace(noise=noise), obs[0], step_key, config.learner)
            if warmup:
                uniform = jax.random.uniform(jax.random.fold_in(step_key, 1), action.shape, action.dtype, -1.0, 1.0)
                action = jnp.where(frames < warmup, uniform, action)
            return action[None], (jnp.where(alive[0], acting.noise, noise), frames + alive[0].astype(frames.dtype))

        return policy

    def fitness(self, episodes: Rollout, members: int, num_evals: int) -> Evaluation:
        """Mean return over each member's xi episodes, and the transitions in storage order."""
        fitness = episodes.episode_return.reshape(members, num_evals).mean(axis=1)
        transitions, valid = episode_major(episodes, members)
        return Evaluation(fitness=fitness, transitions=transitions, valid=valid, frames=episodes.frames)

    def evaluate_population(self, key, members: dict, num_evals: int) -> Evaluation:
        """xi deterministic episodes per member: fitness, and the transitions in storage order."""
        k, params = _each_member_repeated(members, num_evals)
        episodes, _ = rollout(self.env, key, k * num_evals, self.population_policy, params)
        return self.fitness(episodes, k, num_evals)

    def explore(self, key, learner_state: LearnerState, frames, config: Config) -> Exploration:
        """One episode of the RL actor with exploration noise, `frames` stored before it: its transitions,
        frames and advanced noise."""
        episodes, (noise, _) = rollout(self.env, key, 1, self.exploration_policy(learner_state, config),
                                       (learner_state.noise, frames))
        return self.exploration(episodes, learner_state.replace(noise=noise))

    @staticmethod
    def exploration(episodes: Rollout, learner_state: LearnerState) -> Exploration:
        """The exploration episode as an `Exploration`."""
        transitions, valid = episode_major(episodes, 1)
        return Exploration(transitions=jax.tree.map(lambda x: x[0], transitions), valid=valid[0],
                           frames=episodes.frames, learner=learner_state)

    def evaluate_and_explore(self, eval_key, explore_key, members: dict, learner_state: LearnerState, frames,
                             config: Config) -> tuple[Evaluation, Exploration]:
        """`evaluate_population(eval_key, ...)` and `explore(explore_key, ..., frames)` as one rollout.

        The random warm-up counts the frames stored before this generation and the exploration
        episode's own steps (the population's episodes run beside it)."""
        num_evals = config.evolution.num_evals
        k, params = _each_member_repeated(members, num_evals)
        evaluations = k * num_evals
        exploration_policy = self.exploration_policy(learner_state, config)
        policy = side_by_side((evaluations, self.population_policy), (1, exploration_policy))
        keys = jnp.concatenate([initial_state_keys(eval_key, evaluations), initial_state_keys(explore_key, 1)])
        episodes, (_, (noise, _)) = rollout(self.env, explore_key, evaluations + 1, policy,
                                            (params, (learner_state.noise, frames)), reset_keys=keys)
        evaluation = self.fitness(episodes.episodes(0, evaluations), k, num_evals)
        return evaluation, self.exploration(episodes.episodes(evaluations, evaluations + 1),
                                            learner_state.replace(noise=noise))

    def test_actor(self, key, params):
        """Mean return of TEST_EPISODES deterministic episodes; nothing stored or counted."""
        return self.episode_returns(key, params, TEST_EPISODES).mean()

    def test_actors(self, keys, actors: tuple[dict, ...]) -> jax.Array:
        """`test_actor(keys[i], actors[i])` for every i, as one rollout: [len(actors)] mean returns."""
        policy = side_by_side(*[(TEST_EPISODES, self.actor_policy)] * len(actors))
        reset_keys = jnp.concatenate([initial_state_keys(key, TEST_EPISODES) for key in keys])
        episodes, _ = rollout(self.env, keys[-1], TEST_EPISODES * len(actors), policy, actors, reset_keys=reset_keys)
        return episodes.episode_return.reshape(len(actors), TEST_EPISODES).mean(axis=1)

    def episode_returns(self, key, params, episodes: int) -> jax.Array:
        """Returns of `episodes` deterministic episodes of one actor (no noise, nothing stored)."""
        return rollout(self.env, key, episodes, self.actor_policy, params)[0].episode_return

    def train_learner(self, key, learner_state: LearnerState, replay: RingBuffer, frames, config: Config):
        """The learner's updates: a fixed count per generation (static) or one per stored frame."""
        learner = config.learner
        updates = learner.updates_per_generation or (frames * learner.updates_per_frame).astype(jnp.int32)
        return self.learner.train(learner_state, replay, key, updates, learner)

    def generation(self, state: TrainState, config: Config | None = None) -> tuple[TrainState, GenerationMetrics]:
        """One generation (see the module docstring); pure and jit-able.

        `config` replaces the trainer's float settings (learning rates, tau, gamma, sigmas, ...),
        possibly traced: vmapping over it sweeps hyperparameters in one program. Its structural
        settings must equal the trainer's.
        """
        config = self.config if config is None else config
        if state.evolution is None:
            return self.learner_generation(state, config)
        evo = config.evolution
        key, eval_key, champion_key, evolve_key, explore_key, train_key, test_key = jax.random.split(state.key, 7)
        population = state.evolution.population
        chex.assert_tree_shape_prefix(population, (evo.pop_size,))

        evaluation, exploration = self.evaluate_and_explore(eval_key, explore_key, population.members, state.learner,
                                                            state.frames, config)
        fitness = evaluation.fitness
        population = population.replace(memories=memories_add(population.memories, evaluation.transitions,
                                                              evaluation.valid))
        replay = ring_add(state.replay, _flatten(evaluation.transitions), evaluation.valid.reshape(-1))
        replay = ring_add(replay, exploration.transitions, exploration.valid)
        rl_memory = ring_add(state.evolution.rl_memory, exploration.transitions, exploration.valid)
        champion = jax.tree.map(lambda x: x[jnp.argmax(fitness)], population.members)

        q_fn = lambda s, a: self.learner.q1(state.learner.critic, s, a)
        population, info = evolve(evolve_key, population, fitness, self.apply_actor, q_fn, config,
                                  state.evolution.rl_slot)
        selection = state.evolution.selection.update(info.plan.rl_outcome)

        generation_frames = evaluation.frames + exploration.frames
        learner_state, losses = self.train_learner(train_key, exploration.learner, replay, generation_frames, config)
        champion_test, rl_test = self.test_actors((champion_key, test_key), (champion, learner_state.actor))

        generation = state.generation + 1
        sync = generation % evo.sync_period == 0
        slot = rl_sync_slot(fitness, info.plan.elite_slots, evo.protect_all_elites)
        synced = sync_rl_actor(population, learner_state.actor, rl_memory, slot)
        population = jax.tree.map(lambda a, b: jnp.where(sync, a, b), synced, population)

        evolution = EvolutionState(population=population, champion=champion, rl_memory=rl_memory,
                                   selection=selection, rl_slot=jnp.where(sync, slot, -1).astype(jnp.int32))
        new_state = TrainState(evolution=evolution, replay=replay, learner=learner_state, generation=generation,
                               frames=state.frames + generation_frames, key=key)
        metrics = GenerationMetrics(
            frames=new_state.frames, generation_frames=generation_frames, fitness=fitness,
            champion_test=champion_test, rl_test=rl_test, critic_loss=losses.critic_loss,
            actor_loss=losses.actor_loss, synced=sync, **selection.rates(),
        )
        return new_state, metrics

    def learner_generation(self, state: TrainState, config: Config):
        """DDPG or TD3 alone: one exploration episode, one update per stored frame, a test."""
        key, explore_key, train_key, test_key = jax.random.split(state.key, 4)
        exploration = self.explore(explore_key, state.learner, state.frames, config)
        frames = exploration.frames
        replay = ring_add(state.replay, exploration.transitions, exploration.valid)
        learner_state, losses = self.train_learner(train_key, exploration.learner, replay, frames, config)
        rl_test = self.test_actor(test_key, learner_state.actor)
        new_state = state.replace(replay=replay, learner=learner_state, generation=state.generation + 1,
                                  frames=state.frames + frames, key=key)
        nan = jnp.float32(jnp.nan)
        metrics = GenerationMetrics(
            frames=new_state.frames, generation_frames=frames, fitness=jnp.zeros((0,), jnp.float32),
            champion_test=rl_test, rl_test=rl_test, critic_loss=losses.critic_loss, actor_loss=losses.actor_loss,
            synced=jnp.bool_(False), elite_rate=nan, selected_rate=nan, discarded_rate=nan,
        )
        return new_state, metrics


def _each_member_repeated(members: dict, times: int) -> tuple[int, dict]:
    """The member count k and the members' parameters repeated [k * times, ...] (member i at i*times...)."""
    return jax.tree.leaves(members)[0].shape[0], jax.tree.map(lambda x: jnp.repeat(x, times, axis=0), members)


def _flatten(items):
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), items)
