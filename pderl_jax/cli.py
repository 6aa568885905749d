"""Command line: `pderl-jax demo` (component demo) and `pderl-jax memory` (memory estimate)."""

from __future__ import annotations

import argparse
import sys

from pderl_jax.config import MODES, TASKS, ConfigError, load_config


def parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.field=value (e.g. learner.actor_lr=1e-4)")
        overrides[name.strip()] = value.strip()
    return overrides


def enable_compilation_cache() -> None:
    """Keep compiled programs on disk so that a second run skips XLA compilation.

    Set PDERL_JAX_CACHE_DIR to choose the folder, or to an empty string to disable the cache.
    """
    import os
    from pathlib import Path

    import jax

    folder = os.environ.get("PDERL_JAX_CACHE_DIR", str(Path.home() / ".cache" / "pderl_jax" / "xla"))
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pderl-jax", description="PDERL in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the core components for a few generations on a synthetic task")
    demo.add_argument("--env", default="hopper", choices=TASKS,
                      help="task whose config (Table 4) is used; hopper (default) syncs the RL actor every generation")
    demo.add_argument("--mode", default="pderl", choices=list(MODES), help="algorithm variant")
    demo.add_argument("--learner", default="ddpg", choices=["ddpg", "td3"], help="off-policy learner")
    demo.add_argument("--generations", type=int, default=5, help="generations to run (default 5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override any config value, e.g. evolution.pop_size=20")

    memory = sub.add_parser("memory", help="print the memory estimate of a task's configuration")
    memory.add_argument("--env", default="halfcheetah", choices=TASKS)
    memory.add_argument("--obs-dim", type=int, default=17)
    memory.add_argument("--action-dim", type=int, default=6)
    memory.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE")

    args = parser.parse_args(argv)
    enable_compilation_cache()
    try:
        overrides = parse_overrides(args.set)
        if args.command == "demo":
            overrides = {"mode": args.mode, "learner.algorithm": args.learner, "seed": args.seed, **overrides}
            config = load_config(args.env, overrides)
            if args.generations < 1:
                raise ConfigError("--generations must be at least 1")
            from pderl_jax.demo import run_demo

            print(f"pderl-jax component demo: {config.mode} with {config.learner.algorithm}, {config.task} settings "
                  f"(population {config.evolution.pop_size}, RL sync every {config.evolution.sync_period} "
                  f"generation(s)), synthetic one-step task with obs 17 / action 6")
            history = run_demo(config, args.generations)
            first, last = history[0], history[-1]
            print(f"best fitness {first['best']:.3f} -> {last['best']:.3f}, "
                  f"RL actor {first['rl']:.3f} -> {last['rl']:.3f} over {len(history)} generations")
        else:
            from pderl_jax.memory import format_memory_estimate, memory_estimate

            config = load_config(args.env, overrides)
            print(format_memory_estimate(memory_estimate(config, args.obs_dim, args.action_dim)))
    except ConfigError as error:
        print(f"pderl-jax: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
