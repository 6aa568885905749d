"""The environment wrappers of PPO as CleanRL and Baselines run it, for brax's PPO trainer.

brax's own training wrappers add the time limit, vmap the task and restart a finished episode
from the state its environment first started in, so that with one environment (the CleanRL
preset) every episode would start alike. `cleanrl_wrap` keeps brax's time limit and vmap and
adds what Gymnasium's wrappers do in CleanRL's script: actions clipped to the box, each finished
episode restarted from a freshly drawn initial state, and rewards divided by the running standard
deviation of the discounted return, then clipped (Baselines' `VecNormalize`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from brax.envs import base as brax_base
from brax.envs import wrappers as brax_wrappers

RETURN_COUNT_INIT = 1e-4  # Baselines' RunningMeanStd(epsilon=1e-4)
RETURN_EPS = 1e-8  # VecNormalize's epsilon


class ClipAction(brax_base.Wrapper):
    """Actions clipped to the task's box [-1, 1] before it sees them (Gymnasium's ClipAction)."""

    def step(self, state: brax_base.State, action: jax.Array) -> brax_base.State:
        return self.env.step(state, jnp.clip(action, -1.0, 1.0))


class FreshResets(brax_base.Wrapper):
    """Batched episodes that restart, once finished, from a newly drawn initial state (as a Gymnasium
    vector environment resets); brax's AutoResetWrapper restarts them from their first state."""

    def reset(self, rng: jax.Array) -> brax_base.State:
        keys = jax.vmap(jax.random.split)(rng)
        state = self.env.reset(keys[:, 0])
        state.info["reset_rng"] = keys[:, 1]
        return state

    def step(self, state: brax_base.State, action: jax.Array) -> brax_base.State:
        if "steps" in state.info:  # the time limit's step count restarts with the episode
            state.info["steps"] = jnp.where(state.done, 0, state.info["steps"])
        state = self.env.step(state.replace(done=jnp.zeros_like(state.done)), action)

        def restart(state):
            keys = jax.vmap(jax.random.split)(state.info["reset_rng"])
            fresh = self.env.reset(keys[:, 1])
            done = state.done.astype(bool)

            def pick(new, old):
                return jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), new, old)

            info = {**state.info, "reset_rng": keys[:, 0]}
            return state.replace(pipeline_state=jax.tree.map(pick, fresh.pipeline_state, state.pipeline_state),
                                 obs=pick(fresh.obs, state.obs), info=info)

        def keep(state):
            return state.replace(info={**state.info})

        return jax.lax.cond(jnp.any(state.done), restart, keep, state)


def return_moments(count, mean, var, returns):
    """Running count, mean and variance of the discounted returns after a batch of them (Chan et al.'s
    parallel update, as Baselines' RunningMeanStd)."""
    batch_mean, batch_var, batch_count = jnp.mean(returns), jnp.var(returns), returns.size
    delta = batch_mean - mean
    total = count + batch_count
    new_mean = mean + delta * batch_count / total
    m2 = var * count + batch_var * batch_count + delta ** 2 * count * batch_count / total
    return total, new_mean, m2 / total


class NormalizeReward(brax_base.Wrapper):
    """Each reward divided by the running standard deviation of the discounted return, then clipped
    (Baselines' VecNormalize, ret=True): return = return * gamma + reward; statistics updated with the
    batch of returns; return reset to 0 where the episode ended. The statistics are shared by the batch."""

    def __init__(self, env, gamma: float, clip: float):
        super().__init__(env)
        self.gamma, self.clip = gamma, clip

    def reset(self, rng: jax.Array) -> brax_base.State:
        state = self.env.reset(rng)
        zeros = jnp.zeros_like(state.reward)
        state.info.update(reward_return=zeros, reward_count=zeros + RETURN_COUNT_INIT, reward_mean=zeros,
                          reward_var=zeros + 1.0)
        return state

    def step(self, state: brax_base.State, action: jax.Array) -> brax_base.State:
        info = state.info
        returns = info["reward_return"] * self.gamma
        state = self.env.step(state, action)
        returns = returns + state.reward
        count, mean, var = return_moments(info["reward_count"][0], info["reward_mean"][0], info["reward_var"][0],
                                          returns)
        reward = jnp.clip(state.reward / jnp.sqrt(var + RETURN_EPS), -self.clip, self.clip)
        ones = jnp.ones_like(state.reward)
        state.info.update(reward_return=jnp.where(state.done.astype(bool), 0.0, returns), reward_count=count * ones,
                          reward_mean=mean * ones, reward_var=var * ones)
        return state.replace(reward=reward)


def cleanrl_wrap(env, episode_length: int, action_repeat: int, randomization_fn=None, *, gamma: float,
                 reward_clip: float | None, clip_actions: bool = True, fresh_resets: bool = True):
    """brax's `wrap_env_fn` with CleanRL's wrappers: actions clipped (`clip_actions`), the time limit,
    vmap, episodes restarted from fresh states (`fresh_resets`; else brax's AutoResetWrapper) and, with
    `reward_clip`, reward normalisation."""
    if randomization_fn is not None:
        raise ValueError("the CleanRL preset takes no domain randomisation")
    env = brax_wrappers.training.EpisodeWrapper(ClipAction(env) if clip_actions else env, episode_length,
                                                action_repeat)
    env = brax_wrappers.training.VmapWrapper(env)
    env = FreshResets(env) if fresh_resets else brax_wrappers.training.AutoResetWrapper(env)
    return env if reward_clip is None else NormalizeReward(env, gamma, reward_clip)


def wrap_fn(preset, gamma: float):
    """`cleanrl_wrap` set as `preset` (a PpoPreset) asks, for brax's `ppo.train(wrap_env_fn=...)`."""
    return functools.partial(cleanrl_wrap, gamma=gamma, clip_actions=preset.clip_actions,
                             fresh_resets=preset.fresh_resets,
                             reward_clip=preset.reward_clip if preset.reward_normalisation else None)


__all__ = ["ClipAction", "FreshResets", "NormalizeReward", "cleanrl_wrap", "return_moments", "wrap_fn"]
