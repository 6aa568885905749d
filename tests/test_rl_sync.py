"""RL -> population sync: params and a chronological memory copy land in the chosen slot only."""

import jax
import jax.numpy as jnp
import numpy as np

from pderl_jax.buffers import Transition, memories_init, ring_add, ring_init, ring_latest
from pderl_jax.config import NetworkConfig
from pderl_jax.networks import init_actor, init_population, make_actor
from pderl_jax.operators.population import Population, sync_rl_actor


def test_sync_copies_params_and_chronological_memory_into_one_slot():
    rng = np.random.default_rng()
    seed = int(rng.integers(2**31))
    key = jax.random.key(seed)
    actor = make_actor(2, NetworkConfig(actor_hidden=(8, 8)))
    population = init_population(key, actor, 3, 5)
    rl_actor = init_actor(jax.random.fold_in(key, 1), make_actor(2, NetworkConfig(actor_hidden=(8, 8)), rl=True), 3)
    memories = memories_init(5, 16, 3, 2)
    rl_memory = ring_init(16, 3, 2)
    count = int(rng.integers(17, 40))  # wraps the RL memory at least once
    states = rng.normal(size=(count, 3)).astype(np.float32)
    items = Transition(jnp.asarray(states), jnp.zeros((count, 2)), jnp.zeros((count, 3)), jnp.arange(count, dtype=jnp.float32),
                       jnp.zeros((count,)), jnp.zeros((count,)))
    rl_memory = ring_add(rl_memory, items)
    slot = int(rng.integers(5))

    synced = jax.jit(sync_rl_actor)(Population(members=population, memories=memories), rl_actor, rl_memory, slot)
    new_population, new_memories = synced.members, synced.memories

    for i in range(5):
        member = jax.tree.map(lambda x: np.asarray(x[i]), new_population)
        expected = rl_actor if i == slot else jax.tree.map(lambda x: x[i], population)
        for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(a, np.asarray(b), err_msg=f"seed={seed} member {i}")
    copied = jax.tree.map(lambda x: x[slot], new_memories)
    # Chronological copy: slots 0..15 hold the newest 16 rewards in order, position wraps to 0.
    np.testing.assert_array_equal(np.asarray(copied.data.reward), np.arange(count - 16, count), err_msg=f"seed={seed}")
    assert int(copied.size) == 16 and int(copied.position) == 0
    latest, _ = ring_latest(rl_memory, 16)
    np.testing.assert_array_equal(np.asarray(copied.data.state), np.asarray(latest.state))
    for i in range(5):
        if i != slot:
            assert int(new_memories.size[i]) == 0, f"seed={seed}: slot {i} memory changed"


def test_clone_elites_equals_the_sequential_clones_with_chains_and_repeats():
    """Targets that are later sources (chains) and repeated targets, against the copies done in order."""
    from pderl_jax.buffers import memories_add, memories_init, ring_clone
    from pderl_jax.operators.population import clone_elites

    @jax.jit
    def clone_into(population, memories, source, target):  # official `clone`, one pair at a time
        population = jax.tree.map(lambda x: x.at[target].set(x[source]), population)
        memory = ring_clone(jax.tree.map(lambda x: x[source], memories))
        return population, jax.tree.map(lambda xs, x: xs.at[target].set(x), memories, memory)

    rng = np.random.default_rng()
    for _ in range(20):
        # few distinct shapes (each compiles once); 5 copies among 2 or 5 members make chains and repeats
        k, e = int(rng.choice([2, 5, 8])), int(rng.choice([2, 5]))
        population = {"w": jnp.asarray(rng.normal(size=(k, 3)), jnp.float32)}
        memories = memories_init(k, 5, 2, 1)
        items = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype),
                             jax.tree.map(lambda x: x[:, :1].repeat(7, axis=1), memories.data))
        memories = memories_add(memories, items, jnp.asarray(rng.random((k, 7)) < 0.8))
        sources = jnp.asarray(rng.integers(0, k, e))
        targets = jnp.asarray(rng.integers(0, k, e))
        expected_pop, expected_mem = population, memories
        for s, t in zip(sources, targets):
            expected_pop, expected_mem = clone_into(expected_pop, expected_mem, s, t)
        got = jax.jit(clone_elites)(Population(members=population, memories=memories), sources, targets)
        got_pop, got_mem = got.members, got.memories
        msg = f"k={k} sources={sources} targets={targets}"
        for a, b in zip(jax.tree.leaves((expected_pop, expected_mem)), jax.tree.leaves((got_pop, got_mem))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=msg)
