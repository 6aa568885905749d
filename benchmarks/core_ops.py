"""Timing of the core operations at the official HalfCheetah sizes (obs 17, action 6).

Measures, after compilation (reported separately):
  * one learner update (DDPG, and TD3), in ms, with achieved GFLOP/s (XLA's own FLOP count of
    the compiled step) next to the GFLOP/s of a plain 128x400x300 matmul on this machine;
  * one distillation crossover with full genetic memories (8000), 1 child vs 4 children (one
    at a time, the CPU default, and all 4 vmapped at once, the accelerator default);
  * one proximal mutation of 10 members (and the Gaussian mutation / n-point crossover of ERL).

Prints a table and writes benchmarks/results/core_ops.json.

    python benchmarks/core_ops.py [--repeats 3] [--updates 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from pderl_jax.buffers import Transition, memories_add, memories_init, ring_add, ring_init
from pderl_jax.config import EvolutionConfig, LearnerConfig
from pderl_jax.learner.off_policy import Learner
from pderl_jax.networks import apply_actor, apply_critic, init_critic, init_population, make_actor, make_critic
from pderl_jax.operators.distillation import distill_children
from pderl_jax.operators.mutation import gaussian_mutation, proximal_mutation
from pderl_jax.operators.npoint import npoint_crossover
from pderl_jax.operators.population import Population
from timing import best_time  # benchmarks/timing.py (scripts run from this folder's path)

OBS, ACT = 17, 6
RESULTS = Path(__file__).resolve().parent / "results" / "core_ops.json"


def timed(fn, *args, repeats: int):
    """(compile seconds, best-of-`repeats` run seconds) of a jitted function."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    return compile_s, best_time(compiled, *args, repeats=repeats), compiled


def random_items(key, shape):
    k = jax.random.split(key, 3)
    return Transition(jax.random.normal(k[0], (*shape, OBS)), jnp.tanh(jax.random.normal(k[1], (*shape, ACT))),
                      jax.random.normal(k[2], (*shape, OBS)), jnp.zeros(shape), jnp.zeros(shape), jnp.zeros(shape))


def matmul_gflops(repeats: int) -> float:
    a = jax.random.normal(jax.random.key(0), (128, 400))
    b = jax.random.normal(jax.random.key(1), (400, 300))
    n = 2000

    def chain(a):
        def body(c, _):
            out = (a + c) @ b
            return c + 1e-9 * out[0, 0], None
        return jax.lax.scan(body, jnp.zeros(()), None, length=n)[0]

    _, seconds, _ = timed(chain, a, repeats=repeats)
    return 2 * 128 * 400 * 300 * n / seconds / 1e9


def bench_learner(algorithm: str, updates: int, repeats: int) -> dict:
    config = LearnerConfig(algorithm=algorithm)
    learner = Learner(OBS, ACT, config)
    state = learner.init(jax.random.key(0))
    replay = ring_add(ring_init(1_000_000, OBS, ACT), random_items(jax.random.key(1), (20_000,)))
    train = lambda s, r, k: learner.train(s, r, k, updates, config)
    compile_s, seconds, compiled = timed(train, state, replay, jax.random.key(2), repeats=repeats)
    one_step = jax.jit(lambda s, b, k: learner.step(s, b, k, config)).lower(
        state, jax.tree.map(lambda x: x[:128], replay.data), jax.random.key(0)).compile()
    flops = (one_step.cost_analysis() or {}).get("flops", float("nan"))
    step_ms = seconds / updates * 1e3
    return {"step_ms": step_ms, "compile_s": compile_s, "flop_per_step": flops,
            "gflops": flops / (step_ms * 1e-3) / 1e9}


def bench_distillation(children: int, repeats: int, in_parallel: int = 0) -> dict:
    actor, critic = make_actor(ACT), make_critic()
    population = init_population(jax.random.key(0), actor, OBS, 10)
    critic_params = init_critic(jax.random.key(1), critic, OBS, ACT)
    memories = memories_add(memories_init(10, 8000, OBS, ACT), random_items(jax.random.key(2), (10, 8000)),
                            jnp.ones((10, 8000), bool))
    apply = lambda p, s: apply_actor(actor, p, s)
    q_fn = lambda s, a: apply_critic(critic, critic_params, s, a)
    config = EvolutionConfig(children_in_parallel=in_parallel)
    members = Population(population, memories)
    run = lambda key: distill_children(key, members, jnp.arange(children), jnp.arange(children) + 1,
                                       jnp.ones((children,), bool), apply, q_fn, config)
    compile_s, seconds, _ = timed(run, jax.random.key(3), repeats=repeats)
    return {"children": children, "children_in_parallel": in_parallel or "auto", "seconds": seconds,
            "seconds_per_child": seconds / children, "compile_s": compile_s}


def bench_mutations(repeats: int) -> dict:
    actor = make_actor(ACT)
    population = init_population(jax.random.key(0), actor, OBS, 10)
    memories = memories_add(memories_init(10, 8000, OBS, ACT), random_items(jax.random.key(2), (10, 8000)),
                            jnp.ones((10, 8000), bool))
    apply = lambda p, s: apply_actor(actor, p, s)
    config = EvolutionConfig()
    keys = jax.random.split(jax.random.key(4), 10)
    proximal = lambda k, p, m: jax.vmap(lambda k, p, m: proximal_mutation(k, p, m, apply, config))(k, p, m)
    gaussian = lambda k, p: jax.vmap(lambda k, p: gaussian_mutation(k, p, config))(k, p)
    npoint = lambda k, p: jax.vmap(npoint_crossover)(k[:5], jax.tree.map(lambda x: x[:5], p),
                                                   jax.tree.map(lambda x: x[5:], p))
    out = {}
    for name, fn, args in [("proximal_mutation_10", proximal, (keys, population, memories)),
                           ("gaussian_mutation_10", gaussian, (keys, population)),
                           ("npoint_crossover_5_pairs", npoint, (keys, population))]:
        compile_s, seconds, _ = timed(fn, *args, repeats=repeats)
        out[name] = {"seconds": seconds, "compile_s": compile_s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--updates", type=int, default=500, help="learner updates per timed call")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = jax.devices()[0]
    results = {
        "device": f"{device.platform}: {device.device_kind}",
        "host": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "jax": jax.__version__,
        "matmul_128x400x300_gflops": matmul_gflops(args.repeats),
        "ddpg": bench_learner("ddpg", args.updates, args.repeats),
        "td3": bench_learner("td3", args.updates, args.repeats),
        "distillation_1": bench_distillation(1, args.repeats),
        "distillation_4": bench_distillation(4, args.repeats),
        "distillation_4_vmapped": bench_distillation(4, args.repeats, in_parallel=4),
        **bench_mutations(args.repeats),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    rows = [
        ("DDPG update", f"{results['ddpg']['step_ms']:.2f} ms", f"{results['ddpg']['gflops']:.0f} GFLOP/s "
         f"(matmul {results['matmul_128x400x300_gflops']:.0f})", f"{results['ddpg']['compile_s']:.1f} s"),
        ("TD3 update", f"{results['td3']['step_ms']:.2f} ms", f"{results['td3']['gflops']:.0f} GFLOP/s",
         f"{results['td3']['compile_s']:.1f} s"),
        ("distillation, 1 child", f"{results['distillation_1']['seconds']:.3f} s", "",
         f"{results['distillation_1']['compile_s']:.1f} s"),
        ("distillation, 4 children", f"{results['distillation_4']['seconds']:.3f} s",
         f"{results['distillation_4']['seconds_per_child']:.3f} s/child", f"{results['distillation_4']['compile_s']:.1f} s"),
        ("distillation, 4 vmapped", f"{results['distillation_4_vmapped']['seconds']:.3f} s",
         f"{results['distillation_4_vmapped']['seconds_per_child']:.3f} s/child",
         f"{results['distillation_4_vmapped']['compile_s']:.1f} s"),
        ("proximal mutation, 10 members", f"{results['proximal_mutation_10']['seconds'] * 1e3:.1f} ms", "",
         f"{results['proximal_mutation_10']['compile_s']:.1f} s"),
        ("Gaussian mutation, 10 members", f"{results['gaussian_mutation_10']['seconds'] * 1e3:.1f} ms", "",
         f"{results['gaussian_mutation_10']['compile_s']:.1f} s"),
        ("n-point crossover, 5 pairs", f"{results['npoint_crossover_5_pairs']['seconds'] * 1e3:.1f} ms", "",
         f"{results['npoint_crossover_5_pairs']['compile_s']:.1f} s"),
    ]
    print(f"device: {results['device']} ({results['cpu_count']} CPUs), jax {results['jax']}")
    print(f"| {'operation':<30} | {'time':>10} | {'throughput':<28} | {'compile':>8} |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 30}|{'-' * 10}|")
    for name, t, extra, comp in rows:
        print(f"| {name:<30} | {t:>10} | {extra:<28} | {comp:>8} |")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
