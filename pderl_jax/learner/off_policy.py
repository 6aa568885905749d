"""The off-policy learner beside the population: DDPG as in the official code, or TD3.

DDPG step (official `DDPG.update_parameters`): critic regression to r + gamma (1 - done) Q'(s',
mu'(s')), gradient norm clipped to 10, Adam; then the actor ascends Q of the *just-updated*
critic, clipped, Adam; then both targets move by tau. TD3 adds twin critics (min target), target
policy smoothing and a delayed actor/target update. N steps (a traced count: one per stored frame)
run as one `lax.fori_loop`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from pderl_jax.buffers.ring import RingBuffer, Transition, ring_sample
from pderl_jax.config import LearnerConfig, NetworkConfig
from pderl_jax.learner.noise import exploration_noise, noisy_action
from pderl_jax.networks import adam, apply_actor, init_actor, init_critic, make_actor, make_critic


@struct.dataclass
class LearnerState:
    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    noise: jax.Array  # exploration noise state (OU), never reset
    num_updates: jax.Array


@struct.dataclass
class LearnerMetrics:
    critic_loss: jax.Array
    actor_loss: jax.Array


def clip_grad_norm(grads, max_norm):
    """`torch.nn.utils.clip_grad_norm_`: scale by max_norm / (norm + 1e-6) when that is < 1; max_norm 0: no clipping."""
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
    scale = jnp.where(max_norm > 0, jnp.minimum(1.0, max_norm / (norm + 1e-6)), 1.0)
    return jax.tree.map(lambda g: g * scale, grads)


def soft_update(target, online, tau):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


class Learner:
    """DDPG/TD3 for given observation/action sizes. Methods are pure and jit-able.

    The constructor's `config` fixes the structure (DDPG or TD3); every method reads its settings
    from the `LearnerConfig` it is given, so a vmapped one sweeps learning rates, tau, gamma, ...
    """

    def __init__(self, obs_dim: int, action_dim: int, config: LearnerConfig = LearnerConfig(),
                 network: NetworkConfig = NetworkConfig()):
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.twin = config.algorithm == "td3"
        self.actor = make_actor(action_dim, network, rl=True)
        self.critic = make_critic(network, twin=self.twin)
        self._single_critic = make_critic(network, twin=False)

    # ------------------------------------------------------------------ setup
    def init(self, key: jax.Array) -> LearnerState:
        actor_key, critic_key = jax.random.split(key)
        actor = init_actor(actor_key, self.actor, self.obs_dim)
        critic = init_critic(critic_key, self.critic, self.obs_dim, self.action_dim)
        return LearnerState(
            actor=actor, critic=critic,
            actor_target=jax.tree.map(jnp.copy, actor),  # own buffers: the state may be donated
            critic_target=jax.tree.map(jnp.copy, critic),
            actor_opt=adam(1.0).init(actor), critic_opt=adam(1.0).init(critic),
            noise=jnp.zeros((self.action_dim,), jnp.float32), num_updates=jnp.zeros((), jnp.int32),
        )

    # ------------------------------------------------------------ networks
    def act(self, actor_params: dict, states: jax.Array) -> jax.Array:
        return apply_actor(self.actor, actor_params, states)

    def q_values(self, critic_params: dict, states: jax.Array, actions: jax.Array) -> jax.Array:
        """Q(s, a): shape [B] for DDPG, [2, B] for TD3."""
        return self.critic.apply({"params": critic_params}, states, actions)

    def q1(self, critic_params: dict, states: jax.Array, actions: jax.Array) -> jax.Array:
        """The critic used by the actor loss and by the distillation Q-filter (TD3: first twin)."""
        if self.twin:
            critic_params = jax.tree.map(lambda x: x[0], critic_params["critics"])
        return self._single_critic.apply({"params": critic_params}, states, actions)

    def explore(self, state: LearnerState, obs: jax.Array, key: jax.Array,
                config: LearnerConfig) -> tuple[jax.Array, LearnerState]:
        """Exploration action clip(mu(s) + noise, -1, 1) and the state with the advanced noise."""
        noise, noise_state = exploration_noise(key, state.noise, config)
        return noisy_action(self.act(state.actor, obs), noise), state.replace(noise=noise_state)

    # ------------------------------------------------------------- updates
    def critic_target(self, state: LearnerState, batch: Transition, key: jax.Array, config: LearnerConfig):
        next_action = self.act(state.actor_target, batch.next_state)
        if self.twin:
            noise = config.policy_noise * jax.random.normal(key, next_action.shape)
            noise = jnp.clip(noise, -config.noise_clip, config.noise_clip)
            next_action = jnp.clip(next_action + noise, -1.0, 1.0)
        next_q = self.q_values(state.critic_target, batch.next_state, next_action)
        if self.twin:
            next_q = jnp.min(next_q, axis=0)
        terminal = batch.done * (1.0 - batch.truncated) if config.bootstrap_on_timeout else batch.done
        return lax.stop_gradient(batch.reward + config.gamma * (1.0 - terminal) * next_q)

    def step(self, state: LearnerState, batch: Transition, key: jax.Array,
             config: LearnerConfig) -> tuple[LearnerState, LearnerMetrics]:
        """One gradient step on `batch` (critic, then actor with the updated critic, then targets)."""
        target = self.critic_target(state, batch, key, config)

        def critic_loss_fn(critic_params):
            q = self.q_values(critic_params, batch.state, batch.action)
            return jnp.sum(jnp.mean((q - target) ** 2, axis=-1))  # TD3: sum of the two MSEs

        critic_loss, critic_grads = jax.value_and_grad(critic_loss_fn)(state.critic)
        critic_grads = clip_grad_norm(critic_grads, config.grad_clip_norm)
        updates, critic_opt = adam(config.critic_lr).update(critic_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)

        def actor_loss_fn(actor_params):
            return -jnp.mean(self.q1(critic, batch.state, self.act(actor_params, batch.state)))

        def actor_update(_):
            actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(state.actor)
            actor_grads = clip_grad_norm(actor_grads, config.grad_clip_norm)
            updates, actor_opt = adam(config.actor_lr).update(actor_grads, state.actor_opt, state.actor)
            actor = optax.apply_updates(state.actor, updates)
            actor_target = soft_update(state.actor_target, actor, config.tau)
            critic_target = soft_update(state.critic_target, critic, config.tau)
            return actor, actor_opt, actor_target, critic_target, actor_loss

        if self.twin:
            skip = (state.actor, state.actor_opt, state.actor_target, state.critic_target, jnp.float32(jnp.nan))
            # Reference TD3 counts updates from 1: the actor moves on updates delay, 2*delay, ...
            is_actor_step = (state.num_updates + 1) % config.policy_delay == 0
            actor, actor_opt, actor_target, critic_target, actor_loss = lax.cond(
                is_actor_step, actor_update, lambda _: skip, None
            )
        else:
            actor, actor_opt, actor_target, critic_target, actor_loss = actor_update(None)

        new_state = LearnerState(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target,
                                 actor_opt=actor_opt, critic_opt=critic_opt, noise=state.noise,
                                 num_updates=state.num_updates + 1)
        return new_state, LearnerMetrics(critic_loss=critic_loss, actor_loss=actor_loss)

    def train(self, state: LearnerState, replay: RingBuffer, key: jax.Array, num_steps,
              config: LearnerConfig) -> tuple[LearnerState, LearnerMetrics]:
        """`num_steps` updates (a Python int or a traced count) on fresh batches from `replay`.

        A no-op until the replay holds more than `learning_starts` items. Returned metrics are
        means over the steps taken (NaN when none were taken).
        """
        def body(i, carry):
            state, totals, counts = carry
            sample_key, noise_key = jax.random.split(jax.random.fold_in(key, i))
            batch, _ = ring_sample(replay, sample_key, config.batch_size)
            state, m = self.step(state, batch, noise_key, config)
            m = jnp.stack([m.critic_loss, m.actor_loss])
            return state, totals + jnp.nan_to_num(m), counts + ~jnp.isnan(m)

        def run(state):
            zeros = jnp.zeros((2,), jnp.float32)
            state, totals, counts = lax.fori_loop(0, num_steps, body, (state, zeros, zeros))
            means = totals / counts
            return state, LearnerMetrics(critic_loss=means[0], actor_loss=means[1])

        return lax.cond(replay.size > config.learning_starts, run, lambda s: (s, _nan_metrics()), state)


def _nan_metrics() -> LearnerMetrics:
    nan = jnp.float32(jnp.nan)
    return LearnerMetrics(critic_loss=nan, actor_loss=nan)


__all__ = ["Learner", "LearnerState", "LearnerMetrics", "clip_grad_norm", "soft_update"]
