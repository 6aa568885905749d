"""One jitted generation on a small deterministic task: frames, fitness, elitism, RL sync."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_envs import CounterEnv

from pderl_jax.config import ConfigError, load_config
from pderl_jax.envs import rollout
from pderl_jax.learner.noise import exploration_noise
from pderl_jax.training import Trainer


SMALL = {"evolution.pop_size": 4, "evolution.elite_fraction": 0.25, "evolution.num_evals": 2,
         "evolution.sync_period": 2, "evolution.genetic_memory_capacity": 64, "evolution.distill_batch_size": 8,
         "evolution.distill_epochs": 1, "evolution.proximal_batch_size": 16, "learner.replay_capacity": 4096,
         "learner.batch_size": 16, "learner.learning_starts": 32, "network.actor_hidden": "16,16",
         "network.critic_input_width": 8, "network.critic_hidden_width": 8}


def make(mode="pderl", **extra):
    config = load_config("hopper", {**SMALL, "mode": mode, **extra})
    trainer = Trainer(config, CounterEnv())
    return trainer, jax.jit(trainer.generation)


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# PERL and DERL mix the operators of the other two (each combination is checked in test_selection.py)
@pytest.mark.parametrize("mode", ["pderl", pytest.param("perl", marks=pytest.mark.slow),
                                  pytest.param("derl", marks=pytest.mark.slow), "erl"])
def test_generations_count_frames_keep_elites_and_sync_the_rl_actor(mode):
    seed = int(np.random.default_rng().integers(2**31))
    trainer, generation = make(mode)
    state = trainer.init(jax.random.key(seed))
    msg = f"seed={seed} mode={mode}"
    total = 0
    for gen in (1, 2, 3):
        before = state
        state, metrics = generation(state)
        frames = int(metrics.generation_frames)
        total += frames
        # every stored frame reached the replay buffer; the RL actor's own memory got its episode
        assert int(state.frames) == total == int(metrics.frames) == int(state.replay.size), msg
        rl_frames = int(state.evolution.rl_memory.size) - int(before.evolution.rl_memory.size)
        assert 1 <= rl_frames <= 10, msg
        assert 2 * 4 * 2 <= frames - rl_frames <= 2 * 4 * 10, msg
        # the champion of this generation survives unchanged in some slot (its elite clone)
        champion = before.evolution.population.take(int(jnp.argmax(metrics.fitness))).members
        survivors = [state.evolution.population.take(i).members for i in range(4)]
        assert any(leaves_equal(champion, s) for s in survivors), msg
        # RL sync every second generation, into a slot holding exactly the learner's actor
        synced = gen % 2 == 0
        assert bool(metrics.synced) == synced, msg
        if synced:
            slot = int(state.evolution.rl_slot)
            assert 0 <= slot < 4, msg
            assert leaves_equal(state.evolution.population.take(slot).members, state.learner.actor), msg
        else:
            assert int(state.evolution.rl_slot) == -1, msg
        assert np.isfinite(float(metrics.champion_test)) and np.isfinite(float(metrics.rl_test)), msg
    # the learner started once the replay held more than 32 transitions
    assert int(state.learner.num_updates) > 0 and np.isfinite(float(metrics.critic_loss)), msg
    # the sync after generation 2 was classified at generation 3's selection
    assert float(state.evolution.selection.total) == 1.0, msg


# td3-2018: the TD3 authors' settings, shrunk (warm-up of 20 frames, batch 16, 16-16 networks)
TD3_2018_SMALL = {"preset": "td3-2018", "learner.warmup_frames": 20, "network.critic_hidden": "16,16"}


@pytest.mark.parametrize("mode, preset", [("ddpg", {"preset": "official"}), ("td3", {"preset": "official"}),
                                          ("td3", TD3_2018_SMALL)], ids=["ddpg", "td3-official", "td3-2018"])
def test_learner_only_modes_explore_update_once_per_frame_and_test(mode, preset):
    seed = int(np.random.default_rng().integers(2**31))
    trainer, generation = make(mode, **preset)
    state = trainer.init(jax.random.key(seed))
    assert state.evolution is None
    assert trainer.config.learner.algorithm == mode and trainer.config.preset == preset["preset"]
    msg = f"seed={seed} mode={mode} preset={preset['preset']}"
    total, updates = 0, 0
    for _ in range(8):
        stored_before = int(state.replay.size)
        state, metrics = generation(state)
        frames = int(metrics.generation_frames)
        assert 2 <= frames <= 10, msg  # one exploration episode of the toy task
        total += frames
        assert int(state.frames) == total == int(state.replay.size), msg
        if stored_before + frames > 32:  # learning starts above learning_starts, then 1 update per frame
            updates += frames
        assert int(state.learner.num_updates) == updates, msg
        assert np.asarray(metrics.fitness).shape == (0,), msg
        assert float(metrics.champion_test) == float(metrics.rl_test), msg
        assert not bool(metrics.synced) and np.isnan(float(metrics.elite_rate)), msg
    assert updates > 0 and np.isfinite(float(metrics.critic_loss)), msg


def test_learner_mode_needs_its_own_learner():
    from pderl_jax.config import ConfigError

    with pytest.raises(ConfigError, match="set learner.algorithm=td3"):
        load_config("hopper", {"mode": "td3", "preset": "official", "learner.algorithm": "ddpg"})
    with pytest.raises(ConfigError, match="preset 'td3-2018' is a td3 learner: pick a ddpg preset"):
        load_config("hopper", {"mode": "ddpg", "preset": "td3-2018"})


def test_fitness_is_the_mean_return_over_trials():
    seed = int(np.random.default_rng().integers(2**31))
    trainer, _ = make()
    state = trainer.init(jax.random.key(seed))
    key = jax.random.key(seed + 1)
    members = state.evolution.population.members
    evaluation = jax.jit(trainer.evaluate_population, static_argnums=2)(key, members, 2)
    fitness, valid, frames = evaluation.fitness, evaluation.valid, evaluation.frames
    # The same episodes, run directly: member i's trials are columns 2i and 2i + 1.
    params = jax.tree.map(lambda x: jnp.repeat(x, 2, axis=0), members)
    episodes, _ = rollout(trainer.env, key, 8, lambda p, obs, *_: (jax.vmap(trainer.apply_actor)(p, obs), p), params)
    returns = np.asarray(episodes.episode_return).reshape(4, 2)
    np.testing.assert_allclose(np.asarray(fitness), returns.mean(axis=1), rtol=1e-6, err_msg=f"seed={seed}")
    lengths = np.asarray(episodes.episode_length).reshape(4, 2)
    assert int(frames) == lengths.sum()
    np.testing.assert_array_equal(np.asarray(valid).sum(axis=1), lengths.sum(axis=1))
    # hand check of one return: 1 + actor output summed over the stored steps
    actions = np.asarray(episodes.transitions.action[:, 0, 0])[: lengths[0, 0]]
    np.testing.assert_allclose(returns[0, 0], np.sum(1.0 + actions), rtol=1e-5)


def test_same_seed_same_generations():
    trainer, generation = make()
    runs = []
    for _ in range(2):
        state = trainer.init(jax.random.key(3))
        history = []
        for _ in range(2):
            state, metrics = generation(state)
            history.append(np.asarray(metrics.fitness).tolist() + [float(metrics.rl_test), int(metrics.frames)])
        runs.append(history)
    assert runs[0] == runs[1]  # exact: one compiled generation, run twice from the same state


def test_fixed_update_count_per_generation():
    trainer, generation = make("pderl", **{"learner.updates_per_generation": 7})
    state = trainer.init(jax.random.key(int(np.random.default_rng().integers(2**31))))
    updates = 0
    for _ in range(3):
        stored = int(state.replay.size)
        state, metrics = generation(state)
        if stored + int(metrics.generation_frames) > 32:  # learning_starts
            updates += 7
        assert int(state.learner.num_updates) == updates
    assert updates > 0


def test_negative_update_count_is_rejected():
    from pderl_jax.config import ConfigError

    with pytest.raises(ConfigError, match="learner.updates_per_generation = -1 must be >= 0"):
        load_config("hopper", {"learner.updates_per_generation": -1})


def test_the_two_batched_rollouts_equal_the_four_separate_ones():
    """Evaluation + exploration in one rollout, both tests in another: each part equals its own rollout.

    Equal up to float32 rounding: XLA may round an actor's output differently by one unit in the
    last place when it is part of a larger program; frames, masks and storage order are exact.
    """
    seed = int(np.random.default_rng().integers(2**31))
    trainer, generation = make()
    state, _ = generation(trainer.init(jax.random.key(seed)))  # the learner has started updating
    after, metrics = generation(state)
    _, eval_key, champion_key, _, explore_key, _, test_key = jax.random.split(state.key, 7)
    members = state.evolution.population.members
    evaluation = jax.jit(trainer.evaluate_population, static_argnums=2)(eval_key, members, 2)
    fitness, items, valid, frames = evaluation.fitness, evaluation.transitions, evaluation.valid, evaluation.frames
    exploration = jax.jit(trainer.explore)(explore_key, state.learner, state.frames, trainer.config)
    rl_items, rl_valid, rl_frames, explored = (exploration.transitions, exploration.valid, exploration.frames,
                                               exploration.learner)
    close = lambda a, b, what: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7,
                                                          err_msg=f"seed={seed} {what}")
    close(metrics.fitness, fitness, "fitness")
    assert int(metrics.generation_frames) == int(frames) + int(rl_frames), f"seed={seed}"
    # the replay buffer got the population's transitions, then the exploration episode's, as before
    start, count = int(state.replay.size), int(metrics.generation_frames)
    assert int(after.replay.size) == start + count, f"seed={seed}"
    for name in items.__dataclass_fields__:
        population_steps = np.asarray(getattr(items, name)).reshape(-1, *getattr(items, name).shape[2:])
        expected = np.concatenate([population_steps[np.asarray(valid).reshape(-1)],
                                   np.asarray(getattr(rl_items, name))[np.asarray(rl_valid)]])
        close(np.asarray(getattr(after.replay.data, name))[start:start + count], expected, name)
    close(after.learner.noise, explored.noise, "exploration noise")
    # the noise advanced once per step of the exploration episode (official), not over the masked steps
    assert trainer.config.learner.exploration == "ou"
    step_keys = jax.random.split(jax.random.split(explore_key)[1], trainer.env.episode_length)
    noise = state.learner.noise
    for t in range(int(rl_frames)):
        _, noise = exploration_noise(step_keys[t], noise, trainer.config.learner)
    close(explored.noise, noise, "noise steps")
    champion = jax.tree.map(lambda x: x[int(np.argmax(np.asarray(fitness)))], members)
    test = jax.jit(trainer.test_actor)
    close(metrics.champion_test, test(champion_key, champion), "champion test")
    close(metrics.rl_test, test(test_key, after.learner.actor), "RL test")


def test_an_environment_that_does_not_subclass_environment_is_refused_naming_the_fix():
    class Bare:
        obs_dim, action_dim, episode_length = 3, 1, 10

    with pytest.raises(ConfigError, match=r"Bare is not a pderl_jax.envs.Environment: subclass it"):
        Trainer(load_config("hopper"), Bare())

