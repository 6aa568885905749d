"""Command line: `pderl-jax train`, `sweep`, `analyze`, `demo` (component demo) and `memory`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pderl_jax.config import EVOLUTIONARY_MODES, LEARNER_MODES, MODES, TASKS, ConfigError, load_config
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


def run_sweep(args, overrides: dict) -> int:
    """`pderl-jax sweep`: seeds x grid values in one compiled program."""
    from pderl_jax.envs import BraxEnvironment
    from pderl_jax.training.sweep import expand_runs, parse_grid, parse_seeds, train_sweep

    if args.frames is not None:
        overrides["frames"] = args.frames
    base = load_config(args.env, overrides)
    seeds, grid = parse_seeds(args.seeds), parse_grid(args.grid)
    if args.generations_per_call < 1:
        raise ConfigError("--generations-per-call must be at least 1")
    runs = expand_runs(base, seeds, grid)
    env = BraxEnvironment(args.env, backend=args.physics, episode_length=args.episode_length)
    out = args.out or Path("results") / f"sweep-{args.env}-{args.mode}"
    print(f"pderl-jax sweep: {base.mode} with {base.learner.algorithm} on {env.description}, {len(runs)} runs "
          f"({len(seeds)} seeds x {len(runs) // len(seeds)} settings), {base.frames} frames each -> {out}")
    train_sweep(base, runs, env, out, args.generations_per_call, progress=not args.no_progress)
    return 0


def run_analyze(args) -> int:
    """`pderl-jax analyze RUN`: the operator study on the population a run saved."""
    import json

    import jax

    from pderl_jax.analysis import analyze, format_summary
    from pderl_jax.config import from_dict, validate
    from pderl_jax.training import Trainer
    from pderl_jax.training.loop import environment_from_record
    from pderl_jax.training.snapshot import load_snapshot

    if args.draws < 1 or args.episodes < 1:
        raise ConfigError("--draws and --episodes must be at least 1")
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        raise ConfigError(f"--sigmas {args.sigmas!r} must be comma-separated numbers, e.g. 0.01,0.1,1") from None
    config_path = args.run / "config.json"
    if not config_path.exists():
        raise ConfigError(f"{config_path} not found: pass a folder written by pderl-jax train")
    raw = json.loads(config_path.read_text())
    environment = raw.pop("environment")
    config = from_dict(raw)
    validate(config)
    if not config.has_population:
        raise ConfigError(f"{args.run} is a {config.mode} run without a population; analyze an evolutionary run")
    env = environment_from_record(environment, config.task)
    trainer = Trainer(config, env)
    snapshot = load_snapshot(trainer, args.run)
    out = args.out or args.run / "analysis"
    print(f"pderl-jax analyze: {config.mode} population of {args.run} (generation {int(snapshot['generation'])}, "
          f"{int(snapshot['frames'])} frames) on {env.description}; {args.draws} draws x {args.episodes} episodes")
    summary = analyze(trainer, jax.random.key(args.seed), snapshot["population"], snapshot["memories"],
                      snapshot["critic"], out, draws=args.draws, episodes=args.episodes, sigmas=sigmas,
                      metrics_csv=args.run / "metrics.csv")
    print(format_summary(summary))
    print(f"figures and analysis.json in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pderl-jax", description="PDERL in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the core components for a few generations on a synthetic task")
    demo.add_argument("--env", default="hopper", choices=TASKS,
                      help="task whose config (Table 4) is used; hopper (default) syncs the RL actor every generation")
    demo.add_argument("--mode", default="pderl", choices=list(EVOLUTIONARY_MODES), help="algorithm variant")
    demo.add_argument("--learner", default=None, choices=["ddpg", "td3"], help="off-policy learner (default ddpg)")
    demo.add_argument("--generations", type=int, default=5, help="generations to run (default 5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override any config value, e.g. evolution.pop_size=20")

    train = sub.add_parser("train", help="train on a brax or native MuJoCo task until the frame budget is used")
    train.add_argument("--env", default="halfcheetah", metavar="TASK",
                       help=f"task: {', '.join(TASKS)} or a Gymnasium id such as HalfCheetah-v5 "
                            "(its Table 4 config is loaded; default halfcheetah)")
    train.add_argument("--mode", default="pderl", choices=list(MODES),
                       help="algorithm (default pderl); ddpg and td3 train the learner alone, without a population")
    train.add_argument("--learner", default=None, choices=["ddpg", "td3"],
                       help="off-policy learner beside the population (default ddpg, as the official code; "
                            "in the ddpg/td3 modes, the mode's own)")
    train.add_argument("--backend", default=None, choices=["brax", "gymnasium"],
                       help="brax (JAX physics, default for task names) or gymnasium (native MuJoCo v5 tasks "
                            "stepped on the host, default for Gymnasium ids)")
    train.add_argument("--physics", default="auto", choices=["auto", *BACKENDS],
                       help="brax physics pipeline (default auto: spring, the fastest on CPU, where the task "
                            "supports it, else generalized; mjx is closest to MuJoCo)")
    train.add_argument("--episode-length", type=int, default=1000, help="time limit per episode (default 1000)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--frames", type=int, default=None, help="stored-frame budget (default: the task's, e.g. 6M)")
    train.add_argument("--out", type=Path, default=None, help="results folder (default results/ENV-MODE-seedN)")
    train.add_argument("--generations-per-call", type=int, default=1,
                       help="generations per compiled call (more: less host overhead, coarser logging)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--analyze-every", type=int, default=0, metavar="N",
                       help="run the operator study (pderl-jax analyze) every N generations into OUT/analysis; "
                            "extra episodes are not counted as frames (default 0: never)")
    train.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override any config value, e.g. evolution.pop_size=20 learner.tau=0.005")

    sweep = sub.add_parser("sweep", help="several seeds and float hyperparameters as one vmapped program (brax)")
    sweep.add_argument("--env", default="halfcheetah", choices=TASKS, help="brax task (default halfcheetah)")
    sweep.add_argument("--mode", default="pderl", choices=list(MODES), help="algorithm (default pderl)")
    sweep.add_argument("--learner", default=None, choices=["ddpg", "td3"], help="off-policy learner (default ddpg)")
    sweep.add_argument("--physics", default="auto", choices=["auto", *BACKENDS], help="brax physics (default auto)")
    sweep.add_argument("--episode-length", type=int, default=1000, help="time limit per episode (default 1000)")
    sweep.add_argument("--seeds", default="0..3", help="seeds: a range 0..7 or a list 0,3,9 (default 0..3)")
    sweep.add_argument("--grid", nargs="*", default=[], metavar="SECTION.FIELD=V1,V2",
                       help="float settings to vary, e.g. learner.actor_lr=1e-4,5e-5 evolution.mutation_sigma=0.05,0.1; "
                            "every combination runs with every seed")
    sweep.add_argument("--frames", type=int, default=None, help="stored-frame budget per run (default: the task's)")
    sweep.add_argument("--out", type=Path, default=None, help="results folder (default results/sweep-ENV-MODE)")
    sweep.add_argument("--generations-per-call", type=int, default=1, help="generations per compiled call")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override any config value for all runs")

    analyze = sub.add_parser("analyze", help="operator diagnostics of a run's saved population (paper Figs 1-9, 11)")
    analyze.add_argument("run", type=Path, help="a results folder written by pderl-jax train")
    analyze.add_argument("--draws", type=int, default=10, help="parent pairs / parents drawn per operator (default 10)")
    analyze.add_argument("--episodes", type=int, default=3, help="test episodes per policy (default 3)")
    analyze.add_argument("--sigmas", default="0.01,0.03,0.1,0.3,1.0",
                         help="mutation magnitudes for the KL-vs-magnitude sweep (comma separated)")
    analyze.add_argument("--seed", type=int, default=0, help="random seed of the study")
    analyze.add_argument("--out", type=Path, default=None, help="output folder (default RUN/analysis)")

    memory = sub.add_parser("memory", help="print the memory estimate of a task's configuration")
    memory.add_argument("--env", default="halfcheetah", choices=TASKS)
    memory.add_argument("--obs-dim", type=int, default=17)
    memory.add_argument("--action-dim", type=int, default=6)
    memory.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE")

    args = parser.parse_args(argv)
    enable_compilation_cache()
    try:
        overrides = parse_overrides(getattr(args, "set", []))
        if args.command in ("train", "demo", "sweep"):
            learner = args.learner or (args.mode if args.mode in LEARNER_MODES else "ddpg")
            overrides = {"mode": args.mode, "learner.algorithm": learner, **overrides}
            if args.command != "sweep":
                overrides["seed"] = args.seed
        if args.command == "train":
            if args.frames is not None:
                overrides["frames"] = args.frames
            from pderl_jax.envs import make_environment, resolve_task

            task = resolve_task(args.env)
            backend = args.backend or ("brax" if args.env in TASKS else "gymnasium")
            config = load_config(task, overrides)
            if args.generations_per_call < 1:
                raise ConfigError("--generations-per-call must be at least 1")
            if args.analyze_every < 0:
                raise ConfigError("--analyze-every must be 0 (never) or a positive number of generations")
            from pderl_jax.training.loop import train

            env = make_environment(task, backend, physics=args.physics, episode_length=args.episode_length)
            out = args.out or Path("results") / f"{args.env}-{args.mode}-seed{args.seed}"
            print(f"pderl-jax train: {config.mode} with {config.learner.algorithm} on {env.description}, "
                  f"{config.frames} frames, seed {config.seed} -> {out}")
            train(config, env, out, args.generations_per_call, progress=not args.no_progress,
                  analyze_every=args.analyze_every)
        elif args.command == "sweep":
            return run_sweep(args, overrides)
        elif args.command == "analyze":
            return run_analyze(args)
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
