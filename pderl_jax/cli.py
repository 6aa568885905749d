"""Command line: `pderl-jax train`, `pderl-jax demo` (component demo), `pderl-jax memory`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pderl_jax.config import MODES, TASKS, ConfigError, load_config
from pderl_jax.envs.brax_env import BACKENDS


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

    train = sub.add_parser("train", help="train on a brax task until the frame budget is used")
    train.add_argument("--env", default="halfcheetah", choices=TASKS, help="task (its Table 4 config is loaded)")
    train.add_argument("--mode", default="pderl", choices=list(MODES), help="algorithm variant (default pderl)")
    train.add_argument("--learner", default="ddpg", choices=["ddpg", "td3"], help="off-policy learner (default ddpg)")
    train.add_argument("--backend", default="brax", choices=["brax"], help="environment implementation")
    train.add_argument("--physics", default="spring", choices=list(BACKENDS),
                       help="brax physics pipeline (default spring, the fastest on CPU; mjx is closest to MuJoCo)")
    train.add_argument("--episode-length", type=int, default=1000, help="time limit per episode (default 1000)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--frames", type=int, default=None, help="stored-frame budget (default: the task's, e.g. 6M)")
    train.add_argument("--out", type=Path, default=None, help="results folder (default results/ENV-MODE-seedN)")
    train.add_argument("--generations-per-call", type=int, default=1,
                       help="generations per compiled call (more: less host overhead, coarser logging)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override any config value, e.g. evolution.pop_size=20 learner.tau=0.005")

    memory = sub.add_parser("memory", help="print the memory estimate of a task's configuration")
    memory.add_argument("--env", default="halfcheetah", choices=TASKS)
    memory.add_argument("--obs-dim", type=int, default=17)
    memory.add_argument("--action-dim", type=int, default=6)
    memory.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE")

    args = parser.parse_args(argv)
    enable_compilation_cache()
    try:
        overrides = parse_overrides(args.set)
        if args.command in ("train", "demo"):
            overrides = {"mode": args.mode, "learner.algorithm": args.learner, "seed": args.seed, **overrides}
        if args.command == "train":
            if args.frames is not None:
                overrides["frames"] = args.frames
            config = load_config(args.env, overrides)
            if args.generations_per_call < 1:
                raise ConfigError("--generations-per-call must be at least 1")
            from pderl_jax.envs import BraxEnvironment
            from pderl_jax.training.loop import train

            env = BraxEnvironment(args.env, backend=args.physics, episode_length=args.episode_length)
            out = args.out or Path("results") / f"{args.env}-{args.mode}-seed{args.seed}"
            print(f"pderl-jax train: {config.mode} with {config.learner.algorithm} on brax {args.env} "
                  f"({args.physics}), {config.frames} frames, seed {config.seed} -> {out}")
            train(config, env, out, args.generations_per_call, progress=not args.no_progress)
        elif args.command == "demo":
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
