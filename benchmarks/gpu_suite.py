"""The accelerator suite: one command, one process at a time, one JSON, about 8 minutes on one GPU.

    python benchmarks/gpu_suite.py [--out benchmarks/results/gpu_suite.json] [--budget-s 480]
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke.json    # tiny sizes, any machine (CI)

Steps, in order of priority, each in a fresh process started after the previous one ended:
  single-mjx, single-brax   PDERL on HalfCheetah at paper settings (population 10): frames/s,
                            seconds per generation, cold compile (empty persistent cache) and
                            cached compile (the same program again, from that cache)
  seeds-mjx, seeds-brax     the same with 8 vmapped seeds in one program
  population-mjx            the evolutionary part alone (evaluation, selection, crossovers,
                            mutations) at populations 16, 256 and 1024
A step that would start after `--budget-s` is skipped and recorded as skipped. The JSON holds
the card (jax's device kind and nvidia-smi's line where there is one), jax's version and every
figure, and is rewritten after each step; a table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TASK = "halfcheetah"
STEPS = ("single-mjx", "single-brax", "seeds-mjx", "seeds-brax", "population-mjx")
FULL = {"overrides": {}, "episode_length": 1000, "generations": 1, "seeds": 8, "populations": (16, 256, 1024)}
SMOKE = {"overrides": {"evolution.pop_size": 4, "evolution.genetic_memory_capacity": 64,
                       "evolution.distill_batch_size": 8, "evolution.proximal_batch_size": 8,
                       "learner.replay_capacity": 512, "learner.batch_size": 8, "learner.learning_starts": 16,
                       "network.actor_hidden": "8,8", "network.critic_input_width": 8,
                       "network.critic_hidden_width": 8},
         "episode_length": 5, "generations": 1, "seeds": 2, "populations": (3,)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every step runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_suite.json")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no step after this many seconds")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # internal: run one step here
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.step:
        print("RESULT " + json.dumps({**run_step(args.step, sizes), "device": device()}))
        return

    start = time.perf_counter()
    report = {"smoke": args.smoke, "task": TASK, "card": {"nvidia_smi": nvidia_smi()},
              "sizes": {**sizes, "populations": list(sizes["populations"])}, "steps": {}}
    for step in args.steps.split(","):
        if step not in STEPS:
            raise SystemExit(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            report["steps"][step] = {"skipped": f"budget of {args.budget_s:.0f} s spent ({elapsed:.0f} s)"}
            continue
        command = [sys.executable, __file__, "--step", step] + (["--smoke"] if args.smoke else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            report["steps"][step] = {"failed": done.stderr.strip().splitlines()[-20:]}
            print(f"{step}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
        else:
            report["steps"][step] = json.loads(done.stdout.split("RESULT ", 1)[1])
            report["card"].update(report["steps"][step].pop("device"))
            print(f"{step}: {summary(report['steps'][step])}", flush=True)
        report["wall_s"] = time.perf_counter() - start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))  # after every step: a crash keeps what was measured
    print_table(report)
    print(f"written: {args.out}")
    if any("failed" in r for r in report["steps"].values()):
        raise SystemExit(1)


def nvidia_smi() -> str | None:
    """nvidia-smi's name, memory and driver line, where it exists (the parent never starts jax: the
    steps get the whole card)."""
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


def device() -> dict:
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "devices": len(jax.devices()),
            "jax": jax.__version__, "cpu_count": os.cpu_count()}


def run_step(step: str, sizes: dict) -> dict:
    kind, backend = step.split("-")
    if kind == "single":
        return single_run(backend, sizes)
    if kind == "seeds":
        return vmapped_seeds(backend, sizes)
    return population_sizes(backend, sizes)


def trainer_for(backend: str, sizes: dict, **overrides):
    from pderl_jax.config import load_config
    from pderl_jax.envs import make_environment
    from pderl_jax.training import Trainer

    config = load_config(TASK, {**sizes["overrides"], **overrides})
    return Trainer(config, make_environment(TASK, backend, episode_length=sizes["episode_length"]))


def single_run(backend: str, sizes: dict) -> dict:
    """Cold compile into an empty persistent cache, timed generations, then the cached compile."""
    import jax

    cache = tempfile.mkdtemp(prefix="pderl_jax_suite_cache_")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from timing import time_generations

    trainer = trainer_for(backend, sizes)
    figures, _, state = time_generations(trainer, sizes["generations"])
    jax.clear_caches()  # in-memory caches only: the next compile reads the persistent cache
    start = time.perf_counter()
    jax.jit(trainer.generation, donate_argnums=0).lower(state).compile()
    figures["cached_compile_s"] = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    return {**figures, "environment": trainer.env.description}


def vmapped_seeds(backend: str, sizes: dict) -> dict:
    """S seeds as one vmapped program: cold compile, seconds per generation, frames/s of all seeds."""
    import jax
    import jax.numpy as jnp

    from pderl_jax.training.sweep import expand_runs, stack_hparams

    trainer = trainer_for(backend, sizes)
    seeds = sizes["seeds"]
    hparams = stack_hparams(expand_runs(trainer.config, list(range(seeds)), {}))
    states = jax.jit(jax.vmap(trainer.init))(jax.vmap(jax.random.key)(jnp.arange(seeds)))
    start = time.perf_counter()
    step = jax.jit(lambda s, h: jax.vmap(trainer.generation)(s, h), donate_argnums=0).lower(states, hparams).compile()
    compile_s = time.perf_counter() - start
    states, _ = step(states, hparams)  # warm-up
    jax.block_until_ready(states)
    frames, start = 0, time.perf_counter()
    for _ in range(sizes["generations"]):
        states, metrics = step(states, hparams)
        frames += int(jnp.sum(metrics.generation_frames))
    wall = time.perf_counter() - start
    return {"seeds": seeds, "compile_s": compile_s, "seconds_per_generation": wall / sizes["generations"],
            "frames_per_s": frames / wall, "environment": trainer.env.description}


def population_sizes(backend: str, sizes: dict) -> dict:
    """The evolutionary part at each population size: compile and best of two generations."""
    from timing import time_evolutionary_part

    trainers = [trainer_for(backend, sizes, **{"evolution.pop_size": k}) for k in sizes["populations"]]
    return {"rows": [time_evolutionary_part(t) for t in trainers], "environment": trainers[0].env.description}


def summary(result: dict) -> str:
    if "rows" in result:
        return "; ".join(f"pop {r['pop_size']}: {r['seconds']:.2f} s (compile {r['compile_s']:.0f} s)"
                         for r in result["rows"])
    cached = f", cached {result['cached_compile_s']:.1f} s" if "cached_compile_s" in result else ""
    return (f"{result['frames_per_s']:.0f} frames/s, {result['seconds_per_generation']:.2f} s/generation, "
            f"compile {result['compile_s']:.1f} s{cached}")


def print_table(report: dict) -> None:
    card = report["card"]
    print(f"\n{card.get('nvidia_smi') or card.get('device_kind')} ({card.get('platform')}), jax {card.get('jax')}"
          + (" [smoke sizes]" if report["smoke"] else ""))
    print("| step | result |\n|---|---|")
    for step, result in report["steps"].items():
        text = result.get("skipped") or ("failed" if "failed" in result else summary(result))
        print(f"| {step} | {text} |")


if __name__ == "__main__":
    main()
