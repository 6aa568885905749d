"""Scaling: population size, vmapped seeds, and devices.

    python benchmarks/scaling.py population [--pops 16,64,256,1024] [--env halfcheetah]
    python benchmarks/scaling.py sweep      [--seeds 1,2,4,8]
    python benchmarks/scaling.py devices    [--devices 1,2,4]

population: seconds per generation of the evolutionary part alone (population rollouts,
    selection, crossovers, mutations; learner and test episodes excluded), paper settings;
sweep:      seconds per full generation (learner included, paper settings) for S vmapped seeds,
    relative to one seed;
devices:    a 4-seed sweep on 1, 2, 4 devices (on CPU, forced host devices: this checks the
    sharded path and its overhead; on a multi-GPU host, real devices).

Each writes benchmarks/results/scaling_<kind>_<env>.json and a PNG beside it, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}: {d.device_kind} x{len(jax.devices())} ({os.cpu_count()} CPUs)"


def population_scaling(args) -> dict:
    from pderl_jax.config import load_config
    from pderl_jax.envs import BraxEnvironment
    from pderl_jax.training import Trainer
    from timing import time_evolutionary_part

    env = BraxEnvironment(args.env, episode_length=args.episode_length)
    rows = []
    for k in [int(p) for p in args.pops.split(",")]:
        row = time_evolutionary_part(Trainer(load_config(args.env, {"evolution.pop_size": k}), env), args.repeats)
        rows.append(row)
        print(f"population {k}: {row['seconds']:.2f} s per generation (evolutionary part), "
              f"compile {row['compile_s']:.1f} s", flush=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["relative"] = r["seconds"] / base
    return {"kind": "population", "env": args.env, "episode_length": args.episode_length, "rows": rows,
            "x": "pop_size"}


def sweep_scaling(args) -> dict:
    import jax
    import jax.numpy as jnp

    from pderl_jax.config import load_config
    from pderl_jax.envs import BraxEnvironment
    from pderl_jax.training import Trainer
    from pderl_jax.training.sweep import expand_runs, stack_hparams

    env = BraxEnvironment(args.env, episode_length=args.episode_length)
    base = load_config(args.env, {"evolution.pop_size": args.pop_size})
    trainer = Trainer(base, env)
    rows = []
    for s in [int(x) for x in args.seeds.split(",")]:
        runs = expand_runs(base, list(range(s)), {})
        hparams = stack_hparams(runs)
        states = jax.jit(jax.vmap(trainer.init))(jax.vmap(jax.random.key)(jnp.arange(s)))
        step = jax.jit(lambda st, hp: jax.vmap(trainer.generation)(st, hp), donate_argnums=0)
        start = time.perf_counter()
        states, _ = step(states, hparams)  # compile + warm-up (fills the replay past learning_starts)
        jax.block_until_ready(states)
        warm_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            states, metrics = step(states, hparams)
            frames = int(jnp.sum(metrics.generation_frames))
            times.append(time.perf_counter() - start)
        rows.append({"seeds": s, "seconds": min(times), "frames": frames, "first_call_s": warm_s})
        print(f"{s} seeds: {min(times):.2f} s per generation ({frames} frames in all)", flush=True)
        del states
    base_s = rows[0]["seconds"]
    for r in rows:
        r["relative"] = r["seconds"] / base_s
    return {"kind": "sweep", "env": args.env, "pop_size": args.pop_size, "episode_length": args.episode_length,
            "rows": rows, "x": "seeds"}


DEVICE_SCRIPT = """
import json, sys, time
import jax, jax.numpy as jnp
from pderl_jax.config import load_config
from pderl_jax.envs import BraxEnvironment
from pderl_jax.training import Trainer
from pderl_jax.training.sweep import expand_runs, initial_states
env = BraxEnvironment({env!r}, episode_length={episode_length})
base = load_config({env!r}, {{"evolution.pop_size": {pop_size}}})
trainer = Trainer(base, env)
runs = expand_runs(base, list(range({seeds})), {{}})
states, hparams, _, placement = initial_states(trainer, runs)
step = jax.jit(lambda st, hp: jax.vmap(trainer.generation)(st, hp), donate_argnums=0)
states, _ = step(states, hparams); jax.block_until_ready(states)
times = []
for _ in range({repeats}):
    t = time.perf_counter(); states, m = step(states, hparams); jax.block_until_ready(m); times.append(time.perf_counter() - t)
print("RESULT", json.dumps({{"devices": len(jax.devices()), "seconds": min(times), "placement": placement}}))
"""


def device_scaling(args) -> dict:
    rows = []
    for n in [int(x) for x in args.devices.split(",")]:
        script = DEVICE_SCRIPT.format(env=args.env, episode_length=args.episode_length, pop_size=args.pop_size,
                                      seeds=args.sweep_seeds, repeats=args.repeats)
        env = dict(os.environ)
        if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
            env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))[7:])
        rows.append(result)
        print(f"{n} devices: {result['seconds']:.2f} s per generation ({result['placement']})", flush=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["relative"] = r["seconds"] / base
    return {"kind": "devices", "env": args.env, "pop_size": args.pop_size, "seeds": args.sweep_seeds,
            "episode_length": args.episode_length, "rows": rows, "x": "devices"}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r[results["x"]] for r in results["rows"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(x, [r["seconds"] for r in results["rows"]], "o-")
    axes[0].set_ylabel("seconds per generation")
    axes[1].plot(x, [r["relative"] for r in results["rows"]], "o-", label="measured")
    axes[1].plot(x, [v / x[0] for v in x], "--", color="grey", label="linear")
    axes[1].set_ylabel(f"relative to {results['x']} = {x[0]}")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel(results["x"])
    fig.suptitle(f"{results['kind']} scaling, {results['env']} ({results['device']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["population", "sweep", "devices"])
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--pops", default="16,64,256,1024", help="population sizes (population)")
    parser.add_argument("--seeds", default="1,2,4,8", help="seed counts (sweep)")
    parser.add_argument("--devices", default="1,2,4", help="device counts (devices)")
    parser.add_argument("--sweep-seeds", type=int, default=4, help="seeds of the device-scaling sweep")
    parser.add_argument("--pop-size", type=int, default=10, help="population size (sweep, devices)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    measure = {"population": population_scaling, "sweep": sweep_scaling, "devices": device_scaling}[args.kind]
    results = measure(args)
    results["device"] = device_name() if args.kind != "devices" else f"forced host devices, {os.cpu_count()} CPUs"
    import jax

    results["jax"] = jax.__version__
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"scaling_{args.kind}_{args.env}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    plot(results, stem.with_suffix(".png"))
    x = results["x"]
    print(f"| {x} | seconds per generation | relative |")
    print("|---|---|---|")
    for r in results["rows"]:
        print(f"| {r[x]} | {r['seconds']:.2f} | {r['relative']:.2f} |")
    print(f"written: {stem.with_suffix('.json')} and .png ({results['device']})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
