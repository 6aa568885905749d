"""How to step native MuJoCo for the population's episodes: steps/s of the candidates.

N episodes of a Gymnasium v5 task stepped in lockstep for T steps with random actions:

- loop:     a Python loop over N unwrapped Gymnasium envs (what the gymnasium backend does);
- sync:     gymnasium.vector.SyncVectorEnv (same stepping, plus vector-env bookkeeping);
- async:    gymnasium.vector.AsyncVectorEnv (one worker process per env, shared memory);
- mujoco:   bare `mujoco.mj_step` x frame_skip on N MjData (physics only: a lower bound, no
            rewards or observations);
- backend:  the gymnasium backend inside a jitted rollout (io_callback per step, policy in JAX).

    python benchmarks/native_stepping.py [--env HalfCheetah-v5] [--envs 10] [--steps 1000]

Prints a table and writes benchmarks/results/native_stepping_<env>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from pderl_jax.envs import NativeEnvironment, rollout

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--envs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    n, steps = args.envs, args.steps
    probe = gym.make(args.env)
    action_dim = probe.action_space.shape[0]
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, action_dim)).astype(np.float32)
    seconds = {}

    envs = [gym.make(args.env).unwrapped for _ in range(n)]

    def loop():
        for i, e in enumerate(envs):
            e.reset(seed=i)
        for t in range(steps):
            for i, e in enumerate(envs):
                e.step(actions[t, i])

    seconds["loop"] = timed(loop)

    sync = gym.vector.SyncVectorEnv([lambda: gym.make(args.env, max_episode_steps=None) for _ in range(n)])

    def vector(venv):
        def run():
            venv.reset(seed=list(range(n)))
            for t in range(steps):
                venv.step(actions[t])
        return run

    seconds["sync"] = timed(vector(sync))
    sync.close()
    asynchronous = gym.vector.AsyncVectorEnv(
        [lambda: gym.make(args.env, max_episode_steps=None) for _ in range(n)], shared_memory=True)
    seconds["async"] = timed(vector(asynchronous))
    asynchronous.close()

    model = probe.unwrapped.model
    frame_skip = probe.unwrapped.frame_skip
    datas = [mujoco.MjData(model) for _ in range(n)]

    def bare():
        for d in datas:
            mujoco.mj_resetData(model, d)
        for t in range(steps):
            for i, d in enumerate(datas):
                d.ctrl[:] = actions[t, i]
                for _ in range(frame_skip):
                    mujoco.mj_step(model, d)

    seconds["mujoco"] = timed(bare)

    env = NativeEnvironment(args.env, episode_length=steps)
    table = jnp.asarray(actions)
    policy = lambda t, obs, key, alive: (table[t], t + 1)
    run = jax.jit(lambda k: rollout(env, k, n, policy, jnp.int32(0))[0].frames)
    seconds["backend"] = timed(lambda: int(run(jax.random.key(0))))

    results = {
        "env": args.env, "envs": n, "steps": steps, "cpu_count": os.cpu_count(), "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__, "seconds": seconds,
        "env_steps_per_s": {k: n * steps / v for k, v in seconds.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"native_stepping_{args.env}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"{args.env}: {n} episodes x {steps} steps, {os.cpu_count()} CPUs, mujoco {mujoco.__version__}, "
          f"gymnasium {gym.__version__}")
    print("| method | seconds | env steps/s |")
    print("|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.3f} | {n * steps / s:,.0f} |")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
