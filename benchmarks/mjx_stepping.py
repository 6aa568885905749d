"""Stepping the Gymnasium v5 tasks on MJX (pderl_jax/envs/mjx_env.py) vs native MuJoCo via Gymnasium.

For each task: the cold compile time of one vmapped MJX step (N episodes), the MJX env steps/s of
that step (random actions, N episodes in lockstep), the same for the speed options, and the env
steps/s of Gymnasium's own stepping (a Python loop over N unwrapped envs, as the gymnasium
backend does).

    python benchmarks/mjx_stepping.py [--tasks hopper,ant] [--envs 64] [--steps 20]

Prints a table and writes benchmarks/results/mjx_stepping.json.
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

from pderl_jax.envs.gymnasium_env import GYMNASIUM_IDS
from pderl_jax.envs.mjx_env import MjxEnvironment

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"default": {}, "ls_iterations=8": {"ls_iterations": 8},
            "ls_iterations=8, contact_frames=mjx": {"ls_iterations": 8, "contact_frames": "mjx"}}


def mjx_stepping(task: str, n: int, steps: int, options: dict) -> dict:
    env = MjxEnvironment(task, **options)
    keys = jax.random.split(jax.random.key(0), n)
    state = jax.jit(jax.vmap(env.reset))(keys)
    actions = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (steps, n, env.action_dim)), jnp.float32)
    start = time.perf_counter()
    step = jax.jit(jax.vmap(env.step)).lower(state, actions[0]).compile()
    compile_s = time.perf_counter() - start
    state, *_ = step(state, actions[0])  # warm-up
    jax.block_until_ready(state.obs)
    start = time.perf_counter()
    for t in range(steps):
        state, *_ = step(state, actions[t])
    jax.block_until_ready(state.obs)
    seconds = time.perf_counter() - start
    return {"compile_s": compile_s, "step_ms": 1e3 * seconds / steps, "env_steps_per_s": n * steps / seconds}


def gymnasium_stepping(task: str, n: int, steps: int) -> dict:
    envs = [gym.make(GYMNASIUM_IDS[task]).unwrapped for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, envs[0].action_space.shape[0]))
    start = time.perf_counter()
    for t in range(steps):
        for i, env in enumerate(envs):
            if env.step(actions[t, i])[2]:
                env.reset(seed=i)
    seconds = time.perf_counter() - start
    return {"step_ms": 1e3 * seconds / steps, "env_steps_per_s": n * steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(GYMNASIUM_IDS))
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed MJX steps (Gymnasium runs 10x as many)")
    args = parser.parse_args()
    results = {"envs": args.envs, "steps": args.steps, "cpu_count": os.cpu_count(), "device": str(jax.devices()[0]),
               "jax": jax.__version__, "mujoco": mujoco.__version__, "gymnasium": gym.__version__, "tasks": {}}
    for task in args.tasks.split(","):
        row = {name: mjx_stepping(task, args.envs, args.steps, options) for name, options in VARIANTS.items()}
        row["gymnasium"] = gymnasium_stepping(task, args.envs, 10 * args.steps)
        results["tasks"][task] = row
        print(task, json.dumps(row))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "mjx_stepping.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"{args.envs} episodes in lockstep, {os.cpu_count()} CPUs, {results['device']}, jax {jax.__version__}, "
          f"mujoco {mujoco.__version__}")
    print("| task | variant | cold compile s | ms / step | env steps/s |")
    print("|---|---|---|---|---|")
    for task, row in results["tasks"].items():
        for name, r in row.items():
            print(f"| {task} | {name} | {r.get('compile_s', float('nan')):.1f} | {r['step_ms']:.1f} | "
                  f"{r['env_steps_per_s']:,.0f} |")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
