"""Environment steps/s of the three backends at several batch sizes, in one run.

N episodes of a task stepped in lockstep with uniform random actions:

- native: a Python loop over N unwrapped Gymnasium v5 envs, reset when one terminates (what the
  native backend does on the host each time step, without the callback around it);
- mjx:    the v5 task on MJX, `vmap(step)` of the N episodes scanned over the steps in one jitted
          call (as a rollout runs it); terminated episodes stay frozen, still stepped;
- brax:   brax's own task on its spring physics, the same way.

The JAX backends also report the cold compile of that scan (persistent cache off), and MJX its
speed options (`ls_iterations`, `contact_frames`) at one batch size.

    python benchmarks/env_stepping.py [--tasks halfcheetah,hopper] [--batches 1,10,50,200]
                                      [--seconds 3] [--options-batch 50]

Prints a table and writes benchmarks/results/env_stepping.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from pderl_jax.envs import make_environment

RESULTS = Path(__file__).resolve().parent / "results"
MJX_OPTIONS = {"ls_iterations=8": {"ls_iterations": 8},
               "ls_iterations=8, contact_frames=mjx": {"ls_iterations": 8, "contact_frames": "mjx"}}


def jax_stepping(env, n: int, seconds: float) -> dict:
    """Steps/s of `vmap(env.step)` over n episodes, scanned over `steps` steps in one call."""
    keys = jax.random.split(jax.random.key(0), n)
    states = jax.jit(jax.vmap(env.reset))(keys)

    def run(states, key, steps):
        def step(states, key):
            actions = jax.random.uniform(key, (n, env.action_dim), minval=-1.0, maxval=1.0)
            return jax.vmap(env.step)(states, actions)[0], None

        return jax.lax.scan(step, states, jax.random.split(key, steps))[0]

    steps = 10
    start = time.perf_counter()
    compiled = jax.jit(run, static_argnums=2).lower(states, jax.random.key(1), steps).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(states, jax.random.key(1)))  # warm-up
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds or calls < 2:
        jax.block_until_ready(compiled(states, jax.random.key(2 + calls)))
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return {"env_steps_per_s": n * steps / per_call, "ms_per_step": 1e3 * per_call / steps, "compile_s": compile_s}


def native_stepping(env, n: int, seconds: float) -> dict:
    envs = [env._make() for _ in range(n)]
    for i, e in enumerate(envs):
        e.reset(seed=i)
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        actions = rng.uniform(-1, 1, (n, env.action_dim))
        for i, e in enumerate(envs):
            if e.step(actions[i])[2]:
                e.reset(seed=i)
        steps += 1
    wall = time.perf_counter() - start
    return {"env_steps_per_s": n * steps / wall, "ms_per_step": 1e3 * wall / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="halfcheetah,hopper")
    parser.add_argument("--batches", default="1,10,50,200",
                        help="episodes in lockstep (on XLA:CPU an MJX step of 1000 HalfCheetah episodes never "
                             "returns: see the README)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (at least 2 calls)")
    parser.add_argument("--options-batch", type=int, default=50, help="batch of the MJX option variants (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS / "env_stepping.json")
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    batches = [int(b) for b in args.batches.split(",")]
    device = jax.devices()[0]
    results = {"device": f"{device.platform}: {device.device_kind}", "cpu_count": os.cpu_count(),
               "host": platform.processor() or platform.machine(), "jax": jax.__version__, "rows": []}
    for task in args.tasks.split(","):
        for backend in ("native", "mjx", "brax"):
            env = make_environment(task, backend)
            for n in batches:
                measure = native_stepping if backend == "native" else jax_stepping
                row = {"task": env.env_id if backend != "brax" else task, "backend": backend, "variant": "default",
                       "batch": n, **measure(env, n, args.seconds)}
                results["rows"].append(row)
                print(json.dumps(row))
        if args.options_batch:
            for name, options in MJX_OPTIONS.items():
                from pderl_jax.envs.mjx_env import MjxEnvironment

                row = {"task": MjxEnvironment(task).env_id, "backend": "mjx", "variant": name,
                       "batch": args.options_batch,
                       **jax_stepping(MjxEnvironment(task, **options), args.options_batch, args.seconds)}
                results["rows"].append(row)
                print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n{results['device']}, {results['cpu_count']} CPUs, jax {results['jax']}")
    print("| task | backend | variant | batch | env steps/s | ms per step | cold compile s |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        print(f"| {r['task']} | {r['backend']} | {r['variant']} | {r['batch']} | {r['env_steps_per_s']:,.0f} | "
              f"{r['ms_per_step']:.2f} | {compile_s} |")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
