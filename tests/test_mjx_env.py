"""MJX tasks (pderl_jax/envs/mjx_env.py) against Gymnasium v5 itself.

One compiled program per task serves the tests: the project's `rollout` of the MJX task with the
physics state appended to each observation (`Probe`), so that Gymnasium can be put exactly where
each MJX step started. Episodes 0-7 replay action tables (zero, full-scale and uniform random
actions) and are compared with Gymnasium step by step; episodes 8-71 follow one seeded random
linear policy and are compared with 64 Gymnasium episodes in distribution.

- Free-running: Gymnasium starts from MJX's initial state and replays the same actions; every
  step's observation, reward and termination flag must match. HalfCheetah's and Ant's contacts
  are chaotic: a float32 and a float64 trajectory part by ~10x every few steps once the feet hit
  the ground, so free-running they are compared over their first steps only.
- Teacher-forced, all tasks, 30 steps: before each step Gymnasium is put into MJX's state (qpos,
  qvel, solver warm start and the body position MuJoCo keeps from the previous step's last RK4
  stage, which Ant's forward reward reads), then both step once; the chaos cannot accumulate.
- Statistics: mean return and mean episode length agree within 4 standard errors, and the same
  comparison with one weight or rule of Gymnasium's task broken on purpose fails.

The 72-episode runs of Walker2d and Ant take a minute each: by default their steps are compared
on an 8-episode, 30-step rollout and their statistics are `slow`. The programs are compiled at XLA
optimisation level 2, not the suite's 0: they then run ~15x faster for a quarter more compile time
(MJX's line search runs all of its 50 iterations under vmap). Each run's seed is fresh and is
printed in every assertion message.
"""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from pderl_jax.config import ConfigError
from pderl_jax.envs.native_env import GYMNASIUM_IDS
from pderl_jax.envs.mjx_env import MjxEnvironment, MjxState
from pderl_jax.envs.rollout import Environment, rollout
from rollout_reference import masked_scan_rollout

TASKS = ("swimmer", "halfcheetah", "hopper", "walker2d", "ant")
SLOW_TASKS = ("walker2d", "ant")
OPTIMISED = {"xla_backend_optimization_level": 2}
SEED = int(np.random.default_rng().integers(2**31))
REPLAYED, STATISTICAL = 8, 64  # episodes of each kind in the one rollout per task
HORIZON, SHORT_HORIZON = 100, 30  # time limits of the full and the short rollouts
TEACHER_FORCED_STEPS = 30
STD_ERRORS = 4.0  # 8 comparisons a run: false alarms ~ 8 * 6e-5, and the broken tasks sit 8-100 SE away

# The fixed deterministic policy of the statistical comparison: tanh(obs @ W + b), W ~ N(0, scale^2 / obs_dim),
# b ~ N(0, bias^2), from one seed. Weak for Hopper and Walker2d, which fall within ~8 steps under stronger ones.
POLICY_SEED = 1234
POLICY_SCALES = {"swimmer": (1.0, 0.3), "halfcheetah": (1.0, 0.3), "hopper": (0.03, 0.0), "walker2d": (0.03, 0.0),
                 "ant": (0.3, 0.0)}

# Tolerances: |mjx - gymnasium| <= atol + rtol * scale, scale = |gymnasium's value|, except for Ant's clipped
# contact forces: the largest constraint force of the step (with full-scale actions Ant's joint limits hold
# ~150 N against the motors while the feet carry ~1 N; the float32 solve shares its error among them).
# Set from the largest deviations measured over 20 runs of each task (~4,000 compared steps, in the report):
# they use at most 10-40% of these bounds. Their size is float32 (MJX) against float64 (MuJoCo): velocities
# behind stiff contacts come out of a float32 constraint solve good to ~1e-4 relative (HalfCheetah, Ant),
# ~1e-6 without contacts. Run in float64, the same code matches MuJoCo to the float32 rounding of the
# observations (~1e-7) on every task, so these bounds measure precision, not semantics. Free-running, the
# deviations grow by ~10x at every hard contact; the windows stop before that compounds past the bounds.
# task: (free-running steps, obs atol, obs rtol, reward atol, reward rtol); teacher-forced uses the same.
TOLERANCES = {
    "swimmer": (30, 3e-4, 1e-4, 3e-5, 1e-5),
    "halfcheetah": (3, 2e-2, 2e-3, 3e-4, 1e-4),
    "hopper": (30, 1e-4, 1e-4, 2e-5, 1e-5),
    "walker2d": (20, 3e-3, 5e-4, 2e-4, 1e-5),
    "ant": (5, 2e-2, 4e-3, 2e-3, 1e-4),
}
# One broken weight or rule per task, applied to Gymnasium: the statistical comparison must reject it.
# (Swimmer's returns under a random policy are too small against their spread for any modest break.)
BROKEN = {
    "halfcheetah": {"ctrl_cost_weight": 0.3},
    "hopper": {"healthy_angle_range": (-0.15, 0.15)},
    "walker2d": {"healthy_angle_range": (-0.8, 0.8)},
    "ant": {"ctrl_cost_weight": 1.5},
}


def slow_for(tasks):
    return [pytest.param(task, marks=pytest.mark.slow) if task in SLOW_TASKS else task for task in tasks]


# ---------------------------------------------------------------------------------------------- MJX side


@struct.dataclass
class ProbeState:
    inner: MjxState
    obs: jax.Array


class Probe(Environment):
    """The MJX task with its physics state (qpos, qvel, qacc_warmstart, xpos of body 1) appended to
    every observation, so that a rollout also says where each step started."""

    def __init__(self, env: MjxEnvironment):
        self.env = env
        model = env._physics.model
        self.nq, self.nv = model.nq, model.nv
        self.obs_dim = env.obs_dim + self.nq + 2 * self.nv + 3
        self.action_dim, self.episode_length = env.action_dim, env.episode_length

    def _observe(self, state: MjxState) -> jax.Array:
        d = state.data
        return jnp.concatenate([state.obs, d.qpos, d.qvel, d.qacc_warmstart, d.xpos[1]]).astype(jnp.float32)

    def reset(self, key):
        state = self.env.reset(key)
        return ProbeState(state, self._observe(state))

    def step(self, state: ProbeState, action):
        inner, _, reward, terminated = self.env.step(state.inner, action)
        obs = self._observe(inner)
        return ProbeState(inner, obs), obs, reward, terminated

    def split(self, probe_obs: np.ndarray):
        """(obs, qpos, qvel, qacc_warmstart, xpos of body 1) from appended observations."""
        edges = np.cumsum([self.env.obs_dim, self.nq, self.nv, self.nv])
        return np.split(np.asarray(probe_obs, np.float64), edges, axis=-1)


def policy(carry, obs, key, alive):
    """Per episode: clip(table[t] + tanh(obs @ W + b)); tables replay actions, W and b make a linear policy."""
    t, table, weights, bias = carry
    linear = jnp.tanh(jnp.einsum("no,noa->na", obs[:, :weights.shape[1]], weights) + bias)
    return jnp.clip(table[t] + linear, -1.0, 1.0), (t + 1, table, weights, bias)


def linear_policy(task: str, obs_dim: int, action_dim: int):
    rng = np.random.default_rng(POLICY_SEED)
    scale, bias = POLICY_SCALES[task]
    return (rng.normal(0, scale / math.sqrt(obs_dim), (obs_dim, action_dim)).astype(np.float32),
            rng.normal(0, bias, (action_dim,)).astype(np.float32))


def action_tables(rng, horizon: int, action_dim: int) -> np.ndarray:
    """[T, REPLAYED, act]: zero actions, full-scale actions (+1, then random signs), uniform random ones."""
    table = rng.uniform(-1, 1, (horizon, REPLAYED, action_dim))
    table[:, 0] = 0.0
    table[:, 1] = 1.0
    table[:, 2] = np.sign(rng.uniform(-1, 1, (horizon, action_dim)))
    return table.astype(np.float32)


@functools.cache
def program(task: str, horizon: int):
    """The task, its probe and the compiled rollout."""
    env = MjxEnvironment(task, episode_length=horizon)
    probe = Probe(env)
    run = jax.jit(lambda key, keys, carry: rollout(probe, key, keys.shape[0], policy, carry, reset_keys=keys)[0],
                  compiler_options=OPTIMISED)
    return env, probe, run


@functools.cache
def mjx_run(task: str, seed: int, statistical: bool) -> dict:
    """The rollout of the replayed (and the statistical) episodes, as NumPy arrays, with its inputs."""
    horizon = HORIZON if statistical else SHORT_HORIZON
    env, probe, run = program(task, horizon)
    rng = np.random.default_rng([seed, TASKS.index(task)])
    n = REPLAYED + STATISTICAL * statistical
    table = np.zeros((horizon, n, env.action_dim), np.float32)
    table[:, :REPLAYED] = action_tables(rng, horizon, env.action_dim)
    weights, bias = linear_policy(task, env.obs_dim, env.action_dim)
    all_weights = np.zeros((n, env.obs_dim, env.action_dim), np.float32)
    all_weights[REPLAYED:] = weights
    all_bias = np.zeros((n, env.action_dim), np.float32)
    all_bias[REPLAYED:] = bias
    key = jax.random.key(int(rng.integers(2**31)))
    keys = jax.random.split(jax.random.key(int(rng.integers(2**31))), n)
    carry = (jnp.int32(0), jnp.asarray(table), jnp.asarray(all_weights), jnp.asarray(all_bias))
    result = run(key, keys, carry)
    steps = result.transitions
    return {"horizon": horizon, "key": key, "keys": keys, "table": table, "state": np.asarray(steps.state),
            "next_state": np.asarray(steps.next_state), "reward": np.asarray(steps.reward),
            "terminated": (np.asarray(steps.done) > 0) & (np.asarray(steps.truncated) == 0),
            "valid": np.asarray(result.valid), "episode_return": np.asarray(result.episode_return),
            "episode_length": np.asarray(result.episode_length), "frames": int(result.frames), "carry": carry,
            "action": np.asarray(steps.action)}


def replayed_run(task: str, seed: int = SEED) -> dict:
    """The rollout the step-by-step comparisons read: the full one, or for the slow tasks the short one."""
    return mjx_run(task, seed, task not in SLOW_TASKS)  # (positional: one cache entry per run)


# ---------------------------------------------------------------------------------------------- Gymnasium side


def gym_env(task: str, **kwargs):
    return gym.make(GYMNASIUM_IDS[task], **kwargs).unwrapped


def put(env, qpos, qvel, warmstart=None, body_xpos=None):
    """Gymnasium's env in the given state; optionally also the solver warm start and body 1's position,
    which MuJoCo keeps from the last RK4 stage of the previous step (Ant's forward reward reads it)."""
    env.set_state(qpos, qvel)
    if warmstart is not None:
        env.data.qacc_warmstart[:] = warmstart
    if body_xpos is not None:
        env.data.xpos[1] = body_xpos


def gym_step(env, action):
    """Gymnasium's step; also the scale of each observation for the relative tolerance."""
    obs, reward, terminated, _, _ = env.step(np.asarray(action, np.float64))
    scale = np.abs(obs)
    if getattr(env, "_include_cfrc_ext_in_observation", False):  # Ant: the largest constraint force solved
        scale[-6 * (env.model.nbody - 1):] = np.abs(env.data.efc_force).max(initial=0.0)
    return obs, float(reward), bool(terminated), scale


class Deviations:
    """The largest deviations seen (absolute, and relative to the scale) and the failures."""

    def __init__(self, task: str):
        _, self.obs_atol, self.obs_rtol, self.reward_atol, self.reward_rtol = TOLERANCES[task]
        self.obs = self.reward = self.obs_rel = self.reward_rel = 0.0
        self.used = 0.0  # the largest deviation as a fraction of its tolerance
        self.failures: list[str] = []

    def check(self, where: str, obs, gym_obs, scale, reward, gym_reward, terminated, gym_terminated):
        obs_err, reward_err = np.abs(obs - gym_obs), abs(reward - gym_reward)
        self.obs, self.reward = max(self.obs, obs_err.max()), max(self.reward, reward_err)
        self.obs_rel = max(self.obs_rel, (obs_err / (1e-3 + scale)).max())
        self.reward_rel = max(self.reward_rel, reward_err / (1e-3 + abs(gym_reward)))
        used = obs_err / (self.obs_atol + self.obs_rtol * scale)
        reward_used = reward_err / (self.reward_atol + self.reward_rtol * abs(gym_reward))
        self.used = max(self.used, used.max(), reward_used)
        if used.max() > 1:
            worst = int(np.argmax(used))
            self.failures.append(f"{where}: obs[{worst}] {obs[worst]:.6g} vs {gym_obs[worst]:.6g}")
        if reward_used > 1:
            self.failures.append(f"{where}: reward {reward:.6g} vs {gym_reward:.6g}")
        if terminated != gym_terminated:
            self.failures.append(f"{where}: terminated {terminated} vs {gym_terminated}")

    def summary(self) -> str:
        return (f"max |obs| {self.obs:.1e} (rel {self.obs_rel:.1e}), |reward| {self.reward:.1e} "
                f"(rel {self.reward_rel:.1e}), {self.used:.0%} of the tolerance")


def compare_replayed(task: str, seed: int = SEED) -> tuple[Deviations, Deviations, list[bool]]:
    """Free-running and teacher-forced comparisons of the replayed episodes; which of them Gymnasium ended."""
    run = replayed_run(task, seed)
    probe = program(task, run["horizon"])[1]
    free, forced, ended = Deviations(task), Deviations(task), []
    env = gym_env(task)

    def compare(deviations, where, t, i):
        obs, reward, terminated, scale = gym_step(env, run["table"][t, i])
        deviations.check(where, probe.split(run["next_state"][t, i])[0], obs, scale, run["reward"][t, i], reward,
                         bool(run["terminated"][t, i]), terminated)
        return terminated

    for i in range(REPLAYED):
        obs0, qpos, qvel, _, _ = probe.split(run["state"][0, i])
        env.reset(seed=seed + i)  # zeroes cfrc_ext (only mj_rnePostConstraint sets it), as MJX's reset
        put(env, qpos, qvel)
        np.testing.assert_allclose(obs0, env._get_obs(), rtol=0, atol=1e-6, err_msg=f"seed={seed} {task} reset")
        for t in range(TOLERANCES[task][0]):
            if compare(free, f"seed={seed} {task} episode {i} free-running step {t}", t, i):
                break
        episode_ended = False
        for t in range(TEACHER_FORCED_STEPS):
            if not run["valid"][t, i]:
                break
            put(env, *probe.split(run["state"][t, i])[1:])
            episode_ended |= compare(forced, f"seed={seed} {task} episode {i} teacher-forced step {t}", t, i)
        ended.append(episode_ended)
    return free, forced, ended


def gymnasium_statistics(task: str, seed: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of STATISTICAL Gymnasium episodes of the linear policy, cut at HORIZON."""
    env = gym_env(task, **kwargs)
    weights, bias = linear_policy(task, env.observation_space.shape[0], env.action_space.shape[0])
    returns, lengths = [], []
    for i in range(STATISTICAL):
        obs, _ = env.reset(seed=seed + i)
        total, length = 0.0, 0
        for _ in range(HORIZON):
            action = np.clip(np.tanh(obs.astype(np.float32) @ weights + bias), -1, 1)
            obs, reward, terminated, _, _ = env.step(action.astype(np.float64))
            total, length = total + reward, length + 1
            if terminated:
                break
        returns.append(total), lengths.append(length)
    return np.asarray(returns), np.asarray(lengths, float)


def mjx_statistics(task: str, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    run = mjx_run(task, seed, True)
    return run["episode_return"][REPLAYED:].astype(np.float64), run["episode_length"][REPLAYED:].astype(float)


def disagreement(a: np.ndarray, b: np.ndarray, floor: float) -> tuple[float, float]:
    """(|mean a - mean b|, allowed): allowed = STD_ERRORS combined standard errors + floor."""
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return abs(a.mean() - b.mean()), STD_ERRORS * se + floor


def statistics_agree(task: str, mjx_returns, mjx_lengths, gym_returns, gym_lengths) -> tuple[bool, str]:
    # The floors only matter where both samples have (almost) no spread, e.g. every episode reaching the
    # time limit: lengths are then equal integers; returns are sums of float32 rewards good to ~1e-5 each.
    floor = 1e-4 * (1 + abs(gym_returns.mean()))
    d_return, allowed_return = disagreement(mjx_returns, gym_returns, floor)
    d_length, allowed_length = disagreement(mjx_lengths, gym_lengths, 1e-9)
    text = (f"{task}: return {mjx_returns.mean():.3f} vs {gym_returns.mean():.3f} (|diff| {d_return:.3f}, "
            f"allowed {allowed_return:.3f}); length {mjx_lengths.mean():.2f} vs {gym_lengths.mean():.2f} "
            f"(|diff| {d_length:.2f}, allowed {allowed_length:.2f})")
    return d_return <= allowed_return and d_length <= allowed_length, text


# ---------------------------------------------------------------------------------------------- tests


def test_sizes_and_settings_match_gymnasium():
    for task in TASKS:
        env, reference = MjxEnvironment(task), gym_env(task)
        assert (env.obs_dim, env.action_dim) == (reference.observation_space.shape[0], reference.action_space.shape[0])
        assert env.dt == pytest.approx(reference.dt)
        assert (env.backend, env.task, env.episode_length) == ("mjx", task, 1000)
    assert (MjxEnvironment("Ant-v5").obs_dim, MjxEnvironment("ant").action_dim) == (105, 8)
    assert MjxEnvironment("ant", include_cfrc_ext_in_observation=False).obs_dim == 27
    assert MjxEnvironment("hopper", exclude_current_positions_from_observation=False).obs_dim == 12
    with pytest.raises(ConfigError):
        MjxEnvironment("swimmer", healthy_reward=1.0)  # not an option of Swimmer-v5
    with pytest.raises(ConfigError):
        MjxEnvironment("hopper", contact_frames="other")


@pytest.mark.parametrize("task", TASKS)
def test_steps_match_gymnasium(task):
    free, forced, ended = compare_replayed(task)
    print(f"\nseed={SEED} {task}: free-running {free.summary()}; teacher-forced {forced.summary()}; ended {ended}")
    assert not free.failures, "\n".join(free.failures[:10])
    assert not forced.failures, "\n".join(forced.failures[:10])
    if task in ("hopper", "walker2d"):  # the termination rule was exercised both ways
        assert any(ended) and not all(ended), f"seed={SEED} {task} replayed episodes ended: {ended}"


@pytest.mark.parametrize("task", slow_for(TASKS))
def test_returns_and_lengths_match_gymnasium_in_distribution(task):
    mjx_returns, mjx_lengths = mjx_statistics(task)
    agree, text = statistics_agree(task, mjx_returns, mjx_lengths, *gymnasium_statistics(task, SEED))
    print(f"\nseed={SEED} {text}")
    assert agree, f"seed={SEED} {text}"
    if task in BROKEN:  # the same comparison notices one weight or rule broken on purpose
        broken = gymnasium_statistics(task, SEED + STATISTICAL, **BROKEN[task])
        agree, text = statistics_agree(task, mjx_returns, mjx_lengths, *broken)
        print(f"broken {BROKEN[task]}: {text}")
        assert not agree, f"seed={SEED} the comparison did not notice {BROKEN[task]}: {text}"


@pytest.mark.parametrize("task", TASKS)
def test_rollout_returns_frames_and_masked_steps(task):
    run = replayed_run(task)
    valid, terminated, horizon = run["valid"], run["terminated"], run["horizon"]
    assert np.all(np.isfinite(run["episode_return"])), f"seed={SEED} {task}"
    assert run["frames"] == int(valid.sum())
    ended = terminated & valid  # each episode runs until its first termination or the time limit
    length = np.where(ended.any(axis=0), ended.argmax(axis=0) + 1, horizon)
    np.testing.assert_array_equal(run["episode_length"], length, err_msg=f"seed={SEED} {task}")
    assert np.all(np.isfinite(run["state"])) and np.all(np.isfinite(run["next_state"])), f"seed={SEED} {task}"
    ran = length.max()  # the rollout stops stepping once every episode has ended
    for i in np.flatnonzero(length < horizon):  # after termination an episode stays as it was
        last = length[i] - 1
        assert np.all(run["next_state"][last:ran, i] == run["next_state"][last, i]), f"seed={SEED} {task} {i}"
        assert np.all(terminated[last:ran, i]) and np.all(run["reward"][last + 1:, i] == 0), f"seed={SEED} {task} {i}"


@pytest.mark.slow  # ~40 s (a second O2 program); the toy and brax tasks are compared in the default suite
def test_the_early_exit_rollout_equals_the_masked_scan():
    """Hopper's rollout (episodes ending at mixed times) against the masked scan over the whole horizon.

    Masks, lengths and frames are exact. The two are different programs at XLA level 2, which round
    the physics differently in the last bit, so the physical state (observation, qpos, qvel), rewards
    and actions are compared at float32-trajectory tolerance: over 12 seeds the largest deviation was
    6e-5 after 100 steps, a tenth of the bound. The solver's warm start (the previous step's
    accelerations, its starting guess) is not compared: each rounding converges to a different guess
    within the solver's tolerance, up to 1e-2 apart. The toy and brax tasks, at level 0, are compared
    exactly in test_rollout.py.
    """
    run = mjx_run("hopper", SEED, True)
    _, probe, _ = program("hopper", run["horizon"])
    reference = jax.jit(lambda key, keys, carry: masked_scan_rollout(probe, key, keys.shape[0], policy, carry,
                                                                     reset_keys=keys), compiler_options=OPTIMISED)
    steps, valid, returns, _ = reference(run["key"], run["keys"], run["carry"])
    valid, lengths = np.asarray(valid), run["episode_length"]
    assert lengths.min() < lengths.max(), f"seed={SEED} lengths {lengths}"
    np.testing.assert_array_equal(run["valid"], valid, err_msg=f"seed={SEED}")
    np.testing.assert_array_equal(lengths, valid.sum(axis=0), err_msg=f"seed={SEED}")
    physical = probe.env.obs_dim + probe.nq + probe.nv  # observation, qpos, qvel; then the warm start, xpos
    for name in ("state", "next_state"):
        ours, theirs = run[name][valid], np.asarray(getattr(steps, name))[valid]
        np.testing.assert_allclose(ours[:, :physical], theirs[:, :physical], rtol=1e-3, atol=5e-4,
                                   err_msg=f"seed={SEED} {name}")
        np.testing.assert_allclose(ours[:, -3:], theirs[:, -3:], rtol=1e-3, atol=5e-4, err_msg=f"seed={SEED} {name}")
    for name in ("reward", "action"):
        np.testing.assert_allclose(run[name][valid], np.asarray(getattr(steps, name))[valid], rtol=1e-3, atol=5e-4,
                                   err_msg=f"seed={SEED} {name}")
    np.testing.assert_allclose(run["episode_return"], np.asarray(returns), rtol=1e-4, err_msg=f"seed={SEED}")


def test_jit_and_vmap_match_single_episodes():
    """Single jitted episodes equal the rollout's vmapped batch: resets, steps, termination, frozen steps."""
    task, steps = "hopper", 40
    run = replayed_run(task)
    env, probe, _ = program(task, run["horizon"])
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    for i in (0, 1, 2, 3):  # zero, full-scale and random actions
        state = reset(run["keys"][i])
        np.testing.assert_allclose(np.asarray(state.obs), probe.split(run["state"][0, i])[0], rtol=1e-6, atol=1e-7)
        for t in range(min(steps, run["episode_length"].max())):  # the steps the rollout took
            state, obs, reward, terminated = step(state, jnp.asarray(run["table"][t, i]))
            where = f"seed={SEED} {task} episode {i} step {t}"
            np.testing.assert_allclose(np.asarray(obs), probe.split(run["next_state"][t, i])[0], rtol=1e-4, atol=1e-4,
                                       err_msg=where)
            assert bool(terminated) == bool(run["terminated"][t, i]), where
            if run["valid"][t, i]:
                np.testing.assert_allclose(float(reward), run["reward"][t, i], rtol=1e-4, atol=1e-5, err_msg=where)
            else:
                assert float(reward) == 0.0, where
