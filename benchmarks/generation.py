"""Whole-generation speed: frames/s, seconds per generation and its split, compile time, memory.

Paper settings on a brax task (default HalfCheetah, population 10). After one warm-up
generation, `--generations` generations are timed through the same jitted step that
`pderl-jax train` uses. The split times each stage on its own (jitted separately, on the
state reached after warm-up): the rollout of the population's evaluation with the RL
exploration episode, the rollout of both test actors, learner updates (one per frame of the
timed generation), crossovers and mutations; "other" is the
rest of the generation's time (buffer writes, selection, sync, host overhead).

Memory: host peak RSS (reached while compiling), host RSS at the end of the timed generations
(after returning the compiler's freed pages to the OS), and XLA's own account of the generation
program (arguments + temporaries: what a GPU would hold).

    python benchmarks/generation.py [--env halfcheetah] [--pop-size 10] [--generations 3]
                                    [--backends brax,mjx,native]

Each backend runs in its own process (so that its memory figures are its own); brax uses its
JAX physics, mjx the Gymnasium v5 task on MuJoCo MJX, native the same task in native MuJoCo
stepped on the host. Prints a table per
backend and a comparison, and writes benchmarks/results/generation_<env>_pop<k>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from pderl_jax.config import load_config
from pderl_jax.envs import make_environment
from pderl_jax.training.hostmem import current_rss_mib, peak_rss_mib, release_freed_memory
from pderl_jax.operators.distillation import distill_children
from pderl_jax.operators.evolution import mutate_population
from pderl_jax.training import Trainer
from timing import best_time, time_generations  # benchmarks/timing.py (scripts run from this folder's path)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--physics", default="auto")
    parser.add_argument("--mode", default="pderl")
    parser.add_argument("--pop-size", type=int, default=10)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--backends", default="brax", help="comma-separated: brax, mjx, native")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    backends = args.backends.split(",")
    out = args.out or RESULTS / f"generation_{args.env}_pop{args.pop_size}.json"
    if len(backends) == 1:
        results = {backends[0]: measure(args, backends[0])}
    else:  # one process per backend
        results = {}
        for backend in backends:
            with tempfile.TemporaryDirectory() as tmp:
                part = Path(tmp) / "part.json"
                argv = [a for a in sys.argv[1:]]
                subprocess.run([sys.executable, __file__, *_without(argv, "--backends", "--out"),
                                "--backends", backend, "--out", str(part)], check=True)
                results[backend] = json.loads(part.read_text())[backend]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if len(backends) > 1:
        print("| backend | frames/s | s/generation | compile s |")
        print("|---|---|---|---|")
        for backend, r in results.items():
            print(f"| {r['environment']} | {r['frames_per_s']:.1f} | {r['seconds_per_generation']:.2f} | "
                  f"{r['compile_s']:.1f} |")
    print(f"written: {out}")


def _without(argv: list[str], *flags: str) -> list[str]:
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in flags):
            continue
        kept.append(a)
    return kept


def measure(args, backend: str) -> dict:
    config = load_config(args.env, {"mode": args.mode, "evolution.pop_size": args.pop_size})
    env = make_environment(args.env, backend, physics=args.physics if backend == "brax" else "auto")
    trainer = Trainer(config, env)
    figures, generation, state = time_generations(trainer, args.generations)
    compile_s, per_generation = figures["compile_s"], figures["seconds_per_generation"]
    frames_per_generation = figures["frames_per_generation"]
    compile_peak = peak_rss_mib()  # compiling is the peak: the timed generations hold far less
    release_freed_memory()
    running_rss = current_rss_mib()
    analysis = generation.memory_analysis()
    program_mib = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes) / 2**20 if analysis else None

    # The split: each stage alone, on the state after warm-up.
    key = jax.random.key(1)
    evo = config.evolution
    split = {}
    population = state.evolution.population
    split["evaluation + exploration rollout"] = best_time(
        jax.jit(trainer.evaluate_and_explore), key, key, population.members, state.learner, state.frames, config)
    test = jax.jit(trainer.test_actors)
    split["test rollout (2 x 5 episodes)"] = best_time(test, (key, key), (state.learner.actor, state.learner.actor))
    updates = jnp.int32(round(frames_per_generation * config.learner.updates_per_frame))
    split["learner updates"] = best_time(jax.jit(trainer.learner.train), state.learner, state.replay, key, updates,
                                         config.learner, repeats=1)
    if config.crossover == "distillation":
        children = 4  # about 3-4 per generation with pop 10 (reference 4.3)
        q_fn = lambda s, a: trainer.learner.q1(state.learner.critic, s, a)
        crossover = jax.jit(lambda k, pop: distill_children(
            k, pop, jnp.arange(children) % evo.pop_size, (jnp.arange(children) + 1) % evo.pop_size,
            jnp.ones((children,), bool), trainer.apply_actor, q_fn, evo))
        split["crossovers (4 children)"] = best_time(crossover, key, population)
    mask = jnp.ones((evo.pop_size,), bool)
    mutate = jax.jit(lambda k, pop: mutate_population(k, pop, mask, trainer.apply_actor, evo, config.mutation))
    split["mutations (all members)"] = best_time(mutate, key, population)
    split["other (buffers, selection, host)"] = max(0.0, per_generation - sum(split.values()))

    device = jax.devices()[0]
    results = {
        "env": args.env, "environment": env.description, "mode": args.mode, "pop_size": args.pop_size,
        "device": f"{device.platform}: {device.device_kind}", "cpu_count": os.cpu_count(),
        "host": platform.processor() or platform.machine(), "jax": jax.__version__,
        "compile_s": compile_s, "seconds_per_generation": per_generation,
        "frames_per_generation": frames_per_generation, "frames_per_s": figures["frames_per_s"],
        "memory_mib": {"compile_peak_rss": compile_peak,
                       "rss_while_training": running_rss, "xla_arguments_plus_temporaries": program_mib},
        "split_s": split,
    }
    print(f"{args.mode} on {env.description}, population {args.pop_size}, "
          f"{results['device']} ({results['cpu_count']} CPUs), jax {results['jax']}")
    print(f"frames/s {results['frames_per_s']:.1f} | s/generation {per_generation:.2f} "
          f"({frames_per_generation:.0f} frames) | compile {compile_s:.1f} s")
    print(f"memory: host RSS peak (while compiling) {compile_peak:.0f} MiB, "
          f"while training {running_rss:.0f} MiB; XLA program (arguments + temporaries) {program_mib:.0f} MiB")
    print(f"| {'stage':<34} | {'seconds':>8} | {'share':>6} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 8}|")
    for name, seconds in split.items():
        print(f"| {name:<34} | {seconds:>8.2f} | {100 * seconds / per_generation:>5.1f}% |")
    return results


if __name__ == "__main__":
    main()
