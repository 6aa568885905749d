"""Command line: `pderl-jax train`, `sweep`, `compare`, `analyze`, `evaluate`, `render`, `plot`, `memory`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pderl_jax.config import (MODES, SEEDS_HELP, TASKS, ConfigError, TrainingDiverged, load_config, parse_seeds,
                              with_overrides)
from pderl_jax.presets import PRESETS, describe_presets
from pderl_jax.experiments.ppo_presets import PPO_PRESETS
from pderl_jax.envs import BACKENDS
from pderl_jax.envs.brax_env import PHYSICS


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


def _number(word: str) -> int | float:
    try:
        return int(word)
    except ValueError:
        return float(word)  # also inf, -inf


def parse_env_options(items: list[str]) -> dict:
    """`--env-option NAME=VALUE ...` as keyword arguments: true/false, numbers, comma-separated numbers
    (a range: healthy_z_range=0.7,inf) or text."""
    options = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--env-option {item!r} must look like NAME=VALUE (e.g. ctrl_cost_weight=0.2)")
        text = text.strip()
        try:
            value = tuple(_number(w) for w in text.split(",")) if "," in text else _number(text)
        except ValueError:
            value = {"true": True, "false": False}.get(text.lower(), text)
        options[name.strip()] = value
    return options


def environment_for(args, name: str | None = None, vmapped: bool = False):
    """(environment, "backend X: why") of the --env, --backend, --physics, --episode-length and
    --env-option flags."""
    from pderl_jax.envs import choose_backend, make_environment

    backend, why = choose_backend(args.backend, args.physics, vmapped)
    env = make_environment(name or args.env, backend, physics=args.physics, episode_length=args.episode_length,
                           options=parse_env_options(args.env_option))
    return env, f"backend {backend}: {why}"


def run_sweep(args, overrides: dict) -> int:
    """`pderl-jax sweep`: seeds x grid values in one compiled program, or `--resume DIR` of a stopped one."""
    from pderl_jax.envs import resolve_task
    from pderl_jax.training.run_folder import environment_from_record
    from pderl_jax.training.sweep import SWEEP_FILE, expand_runs, parse_grid, read_sweep, train_sweep

    if args.resume is not None:
        refuse_given_on_resume(args, "sweep.json", [("--seeds", args.seeds), ("--grid", args.grid or None),
                                                   ("--frames", args.frames), ("--set", overrides or None)],
                               "only --generations, --generations-per-call and the checkpoint flags may change")
        base, runs, environment, recorded = read_sweep(args.resume)
        env = environment_from_record(environment, base.task)
        backend, out = f"backend {env.backend}: as recorded in {args.resume / SWEEP_FILE}", args.resume
        options = run_options(args, recorded)
    else:
        name, mode = args.env or "halfcheetah", args.mode or "pderl"
        overrides = {"mode": mode, **learner_choice(args), **overrides}
        if args.frames is not None:
            overrides["frames"] = args.frames
        base = load_config(resolve_task(name), overrides)
        seeds, grid = parse_seeds(args.seeds or "4"), parse_grid(args.grid)
        runs = expand_runs(base, seeds, grid)
        options = run_options(args, {})
        options.validate()  # before the environment is built
        env, backend = environment_for(args, name, vmapped=True)
        out = args.out or Path("results") / f"sweep-{name}-{mode}"
    print(f"pderl-jax sweep: {base.mode} with {base.learner.algorithm} (preset {base.preset}) on {env.description}, "
          f"{len(runs)} runs, "
          f"{base.frames} frames each -> {out}\n  {backend}")
    summaries = train_sweep(base, runs, env, out, options, resume=args.resume is not None, force=args.force)
    return 130 if summaries and summaries[0]["interrupted"] else 0


def refuse_given_on_resume(args, record_file: str, more: list[tuple[str, object]], what_may_change: str) -> None:
    """`--resume` takes the settings recorded in the folder; a flag that would change them is refused."""
    given = [flag for flag, value in (("--env", args.env), ("--mode", getattr(args, "mode", None)),
                                      ("--learner", getattr(args, "learner", None)), ("--backend", args.backend),
                                      ("--preset", getattr(args, "preset", None)),
                                      ("--out", args.out), ("--env-option", args.env_option or None), *more)
             if value is not None]
    if given:
        raise ConfigError(f"--resume continues as configured in its {record_file}; drop {', '.join(given)} "
                          f"({what_may_change})")


def run_options(args, recorded: dict):
    """The `RunOptions` of the flags; on resume, what a flag leaves unset comes from the recorded run."""
    from pderl_jax.training.checkpoint import CheckpointOptions
    from pderl_jax.training.driver import RunOptions

    def pick(value, name, default):
        return value if value is not None else recorded.get(name, default)

    return RunOptions(
        generations_per_call=pick(args.generations_per_call, "generations_per_call", 1),
        max_generations=pick(args.generations, "max_generations", 0),
        checkpoint=CheckpointOptions(every=pick(args.checkpoint_every, "checkpoint_every", 5),
                                     keep=pick(args.keep_checkpoints, "keep_checkpoints", 3),
                                     replay=not args.no_replay_in_checkpoint and recorded.get("checkpoint_replay",
                                                                                             True)),
        progress=not args.no_progress, analyze_every=getattr(args, "analyze_every", 0),
        tensorboard=getattr(args, "tensorboard", False))


def run_analyze(args) -> int:
    """`pderl-jax analyze RUN`: the operator study on the population of a run's newest checkpoint."""
    import jax

    from pderl_jax.analysis import analyze, format_summary
    from pderl_jax.training.metrics import METRICS_FILE
    from pderl_jax.training.run_folder import open_run

    if args.draws < 1 or args.episodes < 1:
        raise ConfigError("--draws and --episodes must be at least 1")
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        raise ConfigError(f"--sigmas {args.sigmas!r} must be comma-separated numbers, e.g. 0.01,0.1,1") from None
    run = open_run(args.run)
    if not run.config.has_population:
        raise ConfigError(f"{args.run} is a {run.config.mode} run without a population; analyze an evolutionary run")
    out = args.out or args.run / "analysis"
    print(f"pderl-jax analyze: {run.config.mode} population of {args.run} (generation {int(run.state.generation)}, "
          f"{int(run.state.frames)} frames) on {run.env.description}; {args.draws} draws x {args.episodes} episodes")
    summary = analyze(run.trainer, jax.random.key(args.seed), run.state.evolution.population,
                      run.state.learner.critic, out, draws=args.draws, episodes=args.episodes, sigmas=sigmas,
                      metrics_csv=args.run / METRICS_FILE)
    print(format_summary(summary))
    print(f"figures and analysis.json in {out}")
    return 0


def policies_to_run(args, overrides: dict) -> tuple[object, dict[str, dict], str]:
    """(trainer, {name: actor params}, description) for `evaluate` and `render`: a run folder's champion
    and RL actor, or an official PDERL actor state dict (`--official FILE --env TASK`)."""
    import jax

    if args.official is not None:
        from pderl_jax.envs import resolve_task
        from pderl_jax.interop.torch_checkpoint import load_official_actor
        from pderl_jax.training import Trainer

        if args.run is not None:
            raise ConfigError("give either a run folder or --official FILE, not both")
        config = load_config(resolve_task(args.env), {**learner_choice(args), **overrides})
        env, _ = environment_for(args)
        trainer = Trainer(config, env)
        like = jax.eval_shape(trainer.actor.init, jax.random.key(0), jax.numpy.zeros((env.obs_dim,)))["params"]
        params = load_official_actor(args.official, like, config.network)
        return trainer, {"official actor": params}, f"{args.official} on {env.description}"
    if args.run is None:
        raise ConfigError("give a run folder (written by pderl-jax train), or --official FILE --env TASK")
    from pderl_jax.training.run_folder import open_run

    run = open_run(args.run)
    actors = {"RL actor": run.state.learner.actor}
    if run.config.has_population:
        actors = {"champion": run.state.evolution.champion, **actors}
    return run.trainer, actors, (f"{args.run} (generation {int(run.state.generation)}, {int(run.state.frames)} "
                                 f"frames) on {run.env.description}")


def run_evaluate(args, overrides: dict) -> int:
    """`pderl-jax evaluate`: deterministic test episodes of the champion and the RL actor."""
    import jax
    import numpy as np

    if args.episodes < 1:
        raise ConfigError("--episodes must be at least 1")
    trainer, actors, description = policies_to_run(args, overrides)
    print(f"pderl-jax evaluate: {description}; {args.episodes} episodes each, seed {args.seed}")
    returns_of = jax.jit(trainer.episode_returns, static_argnums=2)
    results = {}
    for name, params in actors.items():
        returns = np.asarray(returns_of(jax.random.key(args.seed), params, args.episodes), dtype=np.float64)
        results[name] = {"mean": float(returns.mean()), "std": float(returns.std()), "returns": returns.tolist()}
        print(f"{name:>14}: mean return {returns.mean():10.2f} +- {returns.std():8.2f} "
              f"(min {returns.min():.1f}, max {returns.max():.1f})")
    if args.json is not None:
        import json

        args.json.write_text(json.dumps({"episodes": args.episodes, "seed": args.seed, "actors": results}, indent=2))
    return 0


def run_render(args, overrides: dict) -> int:
    """`pderl-jax render`: one episode of the champion (or RL actor) as a GIF/MP4 of MuJoCo frames (or brax HTML)."""
    from pderl_jax.envs.render import render_episode

    trainer, actors, description = policies_to_run(args, overrides)
    name = {"champion": "champion", "rl": "RL actor"}[args.actor]
    if name not in actors:
        name = next(iter(actors))
    suffix = "html" if trainer.env.backend == "brax" else "gif"
    out = args.out or (args.run or Path(".")) / f"episode.{suffix}"
    info = render_episode(trainer.env, trainer.apply_actor, actors[name], out, seed=args.seed,
                          max_steps=args.max_steps)
    print(f"pderl-jax render: {name} of {description}: {info['frames']} steps, return {info['return']:.1f} -> "
          f"{info['path']}")
    return 0


def run_plot(args) -> int:
    """`pderl-jax plot DIR...`: learning curves, population spread and RL selection rates as PNGs."""
    from pderl_jax.analysis.curves import plot_runs

    out = args.out or (args.runs[0] if len(args.runs) == 1 else Path("results") / "plots")
    files = plot_runs(args.runs, out)
    print("pderl-jax plot: " + ", ".join(str(f) for f in files))
    return 0


def run_compare(args, overrides: dict) -> int:
    """`pderl-jax compare`: methods x seeds on one task; Table 1 and Figure 4 of the paper."""
    from pderl_jax.experiments.compare import compare, merge, parse_methods, read_comparison
    from pderl_jax.envs import resolve_task
    from pderl_jax.training.run_folder import environment_from_record

    if args.merge:
        out = args.out or Path("results") / "compare-merged"
        merge(args.merge, out, force=args.force)
    else:
        if args.resume is not None:
            refuse_given_on_resume(args, "config.json", [("--methods", args.methods), ("--seeds", args.seeds),
                                                        ("--ppo-preset", args.ppo_preset),
                                                        ("--frames", args.frames), ("--set", overrides or None)],
                                   "nothing else may change")
            record = read_comparison(args.resume)
            task, methods, seeds, frames = record["task"], record["methods"], record["seeds"], record["frames"]
            overrides, presets = record["overrides"], record["presets"]
            env = environment_from_record(record["environment"], task)
            backend, out = f"backend {env.backend}: as recorded in {args.resume / 'config.json'}", args.resume
        else:
            methods = parse_methods(args.methods or "pderl,perl,derl,erl,td3,ppo")
            overrides, presets = {**learner_choice(args), **overrides}, None
            seeds = parse_seeds(args.seeds or "5")
            name = args.env or "halfcheetah"
            task = resolve_task(name)
            frames = args.frames if args.frames is not None else load_config(task).frames
            env, backend = environment_for(args, name, vmapped=True)
            out = args.out or Path("results") / f"compare-{name}"
        print(f"pderl-jax compare: {', '.join(methods)} on {env.description}, seeds {seeds}, {frames} frames -> {out}"
              f"\n  {backend}")
        summary = compare(task, env, methods, seeds, frames, out, overrides, force=args.force,
                          progress=not args.no_progress, resume=args.resume is not None, presets=presets,
                          ppo_preset=args.ppo_preset)
        if summary.get("interrupted"):
            return 130
    print(f"table: {out}/table.md, figure: {out}/figure4.png")
    return 0


def run_train(args, overrides: dict) -> int:
    """`pderl-jax train`: a new run, or `--resume DIR` of an interrupted one."""
    from pderl_jax.envs import resolve_task
    from pderl_jax.analysis import run_hooks
    from pderl_jax.training.loop import train
    from pderl_jax.training.run_folder import environment_from_record, read_run_config

    if args.frames is not None:
        overrides["frames"] = args.frames
    if args.resume is not None:
        refuse_given_on_resume(args, "config.json", [("--seed", args.seed)],
                               "only --frames, --generations and --set may change")
        config, environment, recorded = read_run_config(args.resume)
        config = with_overrides(config, overrides)
        env = environment_from_record(environment, config.task)
        backend = f"backend {env.backend}: as recorded in {args.resume / 'config.json'}"
        out = args.resume
    else:
        name = args.env or "halfcheetah"
        task = resolve_task(name)
        mode = args.mode or "pderl"
        seed = 0 if args.seed is None else args.seed
        config = load_config(task, {"mode": mode, **learner_choice(args), "seed": seed, **overrides})
        recorded = {}
        env = None
        out = args.out or Path("results") / f"{name}-{mode}-seed{seed}"

    options = run_options(args, recorded)
    options.validate()  # before the environment is built and anything compiles
    if env is None:
        env, backend = environment_for(args, name)
    verb = "resuming" if args.resume is not None else "train:"
    print(f"pderl-jax {verb} {config.mode} with {config.learner.algorithm} (preset {config.preset}) on {env.description}, "
          f"{config.frames} frames, seed {config.seed} -> {out}\n  {backend}")
    summary = train(config, env, out, options, hooks=run_hooks(), resume=args.resume is not None, force=args.force)
    return 130 if summary["interrupted"] else 0


def run_memory(args, overrides: dict) -> int:
    """`pderl-jax memory`: the memory estimate of a task's configuration."""
    from pderl_jax.training.footprint import format_memory_estimate, memory_estimate

    config = load_config(args.env, {"mode": args.mode, **learner_choice(args), **overrides})
    print(format_memory_estimate(memory_estimate(config, args.obs_dim, args.action_dim)))
    return 0


# ---------------------------------------------------------------- flags shared by several commands
def add_environment_flags(command, backend_help: str | None, physics_help: str, length_help: str) -> None:
    """--backend (omitted where `backend_help` is None), --physics, --episode-length and --env-option."""
    if backend_help is not None:
        command.add_argument("--backend", default=None, choices=BACKENDS, help=backend_help)
    command.add_argument("--physics", default="auto", choices=["auto", *PHYSICS], help=physics_help)
    command.add_argument("--episode-length", type=int, default=1000, help=length_help)
    command.add_argument("--env-option", nargs="*", default=[], metavar="NAME=VALUE",
                         help="a keyword argument of the Gymnasium v5 task (ctrl_cost_weight=0.2, "
                              "healthy_z_range=0.7,inf, ...; mjx and native), or of MJX (contact_frames=mjx, "
                              "ls_iterations=8)")


def add_algorithm_flags(command, default_mode: str | None, mode_help: str, learner_help: str) -> None:
    """--mode, --learner and --preset."""
    command.add_argument("--mode", default=default_mode, choices=list(MODES), help=mode_help)
    command.add_argument("--learner", default=None, choices=["ddpg", "td3"], help=learner_help)
    add_preset_flag(command)


def add_preset_flag(command, applies_to: str = "") -> None:
    command.add_argument("--preset", default=None, choices=list(PRESETS), metavar="NAME",
                         help=f"learner preset{applies_to}: a named set of learner and network settings, each from "
                              "its authors' code (--set still overrides single values; default td3-2018 for "
                              f"--mode td3, official otherwise). {describe_presets()}")


def learner_choice(args) -> dict:
    """The --learner and --preset flags as overrides (what is not given is left to the preset and the mode)."""
    chosen = {}
    if getattr(args, "preset", None) is not None:
        chosen["preset"] = args.preset
    if getattr(args, "learner", None) is not None:
        chosen["learner.algorithm"] = args.learner
    return chosen


def add_set_flag(command, help_text: str = "override any config value, e.g. evolution.pop_size=20") -> None:
    command.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help=help_text)


def add_run_flags(command, out_help: str, force_help: str) -> None:
    """--out, --force and --no-progress of the commands that train."""
    command.add_argument("--out", type=Path, default=None, help=out_help)
    command.add_argument("--force", action="store_true", help=force_help)
    command.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_checkpoint_flags(command, resume_help: str) -> None:
    """--resume, --generations, --generations-per-call and the checkpoint flags of train and sweep."""
    command.add_argument("--resume", type=Path, default=None, metavar="DIR", help=resume_help)
    command.add_argument("--generations", type=int, default=None, metavar="N",
                         help="also stop after N generations in all (default: the frame budget alone); a later "
                              "--resume continues")
    command.add_argument("--generations-per-call", type=int, default=None,
                         help="generations per compiled call (more: less host overhead, coarser logging; default 1)")
    command.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                         help="checkpoint every N generations (default 5; 0: only at the end and on Ctrl-C)")
    command.add_argument("--keep-checkpoints", type=int, default=None, metavar="K",
                         help="keep the newest K checkpoints (default 3)")
    command.add_argument("--no-replay-in-checkpoint", action="store_true",
                         help="leave the replay buffer out of checkpoints (smaller; a resume then starts with an "
                              "empty buffer and is no longer exact)")


def add_process_flags(command) -> None:
    """--coordinator, --num-processes, --process-id and --join-timeout of the commands that train."""
    group = command.add_argument_group("several processes (one per host; see the README's multi-host section)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0, which hosts the coordinator (e.g. 127.0.0.1:12345 on one "
                            "machine, or the first node and a free port); JAX's and SLURM's variables are read "
                            "when this is omitted")
    group.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in all")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process: 0..N-1")
    group.add_argument("--join-timeout", type=int, default=60, metavar="S",
                       help="seconds to wait for the others to join, and for a silent process to count as lost "
                            "(default 60)")


def start_processes(args) -> bool:
    """Join the other processes (if the flags or the environment name any) before anything touches a device;
    the processes other than 0 then print only errors. Whether it joined any."""
    from pderl_jax.training import distributed

    group = distributed.group_from_flags(args.coordinator, args.num_processes, args.process_id, args.join_timeout)
    if group is None and not distributed.cluster_detected():
        return False
    distributed.start(group, args.join_timeout)
    if not distributed.is_writer():
        sys.stdout = open(os.devnull, "w")
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pderl-jax", description="PDERL in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in (add_train_parser, add_sweep_parser, add_analyze_parser, add_evaluate_and_render_parsers,
                        add_compare_parser, add_plot_and_memory_parsers):
        add_command(sub)
    return parser


def add_train_parser(sub) -> None:
    """`pderl-jax train`."""
    train = sub.add_parser("train", help="train on a Gymnasium v5 MuJoCo task until the frame budget is used")
    train.add_argument("--env", default=None, metavar="TASK",
                       help=f"task: {', '.join(TASKS)}, or its Gymnasium id such as HalfCheetah-v5 (the same "
                            "task; its Table 4 config is loaded; default halfcheetah)")
    add_algorithm_flags(train, None, "algorithm (default pderl); ddpg and td3 train the learner alone, without a "
                        "population", "off-policy learner beside the population (default ddpg, as the official "
                        "code; in the ddpg/td3 modes, the mode's own)")
    add_environment_flags(train, "mjx (the Gymnasium v5 task on MuJoCo MJX, pure JAX), native (the same task in "
                          "native MuJoCo through Gymnasium, stepped on the host) or brax (brax's own version "
                          "of the task). Default: MJX on a GPU or TPU, native on CPU (the faster there); the run "
                          "prints its choice",
                          "brax physics pipeline; implies --backend brax (default auto: spring, the fastest "
                          "on CPU, where the task supports it, else generalized)",
                          "time limit per episode (default 1000)")
    train.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    train.add_argument("--frames", type=int, default=None, help="stored-frame budget (default: the task's, e.g. 6M)")
    add_run_flags(train, "results folder (default results/ENV-MODE-seedN)",
                  "overwrite the results of another run in --out")
    add_checkpoint_flags(train, "continue the run in DIR from its newest intact checkpoint; the rows after it are "
                         "the ones an uninterrupted run writes (--frames/--generations may extend it)")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard events to OUT/tensorboard (needs tensorboardX)")
    train.add_argument("--analyze-every", type=int, default=0, metavar="N",
                       help="run the operator study (pderl-jax analyze) every N generations into OUT/analysis; "
                            "extra episodes are not counted as frames (default 0: never)")
    add_set_flag(train, "override any config value, e.g. evolution.pop_size=20 learner.tau=0.005")
    add_process_flags(train)


def add_sweep_parser(sub) -> None:
    """`pderl-jax sweep`."""
    sweep = sub.add_parser("sweep", help="several seeds and float hyperparameters as one vmapped program")
    sweep.add_argument("--env", default=None,
                       help=f"task: {', '.join(TASKS)} or a Gymnasium id (default halfcheetah)")
    add_algorithm_flags(sweep, None, "algorithm (default pderl)", "off-policy learner (default ddpg)")
    add_environment_flags(sweep, "mjx (default) or brax: a JAX backend, vmapped with the runs",
                          "brax physics (default auto)", "time limit per episode (default 1000)")
    sweep.add_argument("--seeds", default=None, help=f"{SEEDS_HELP} (default 4: seeds 0..3)")
    sweep.add_argument("--grid", nargs="*", default=[], metavar="SECTION.FIELD=V1,V2",
                       help="float settings to vary, e.g. learner.actor_lr=1e-4,5e-5 evolution.mutation_sigma=0.05,0.1; "
                            "every combination runs with every seed")
    sweep.add_argument("--frames", type=int, default=None, help="stored-frame budget per run (default: the task's)")
    add_run_flags(sweep, "results folder (default results/sweep-ENV-MODE)", "overwrite an earlier sweep in --out")
    add_checkpoint_flags(sweep, "continue the sweep in DIR from its newest intact checkpoint (all runs at once); "
                         "the rows after it are the ones an uninterrupted sweep writes")
    add_set_flag(sweep, "override any config value for all runs")
    add_process_flags(sweep)


def add_analyze_parser(sub) -> None:
    """`pderl-jax analyze`."""
    analyze = sub.add_parser("analyze", help="operator diagnostics of a run's saved population (paper Figs 1-9, 11)")
    analyze.add_argument("run", type=Path, help="a results folder written by pderl-jax train")
    analyze.add_argument("--draws", type=int, default=10, help="parent pairs / parents drawn per operator (default 10)")
    analyze.add_argument("--episodes", type=int, default=3, help="test episodes per policy (default 3)")
    analyze.add_argument("--sigmas", default="0.01,0.03,0.1,0.3,1.0",
                         help="mutation magnitudes for the KL-vs-magnitude sweep (comma separated)")
    analyze.add_argument("--seed", type=int, default=0, help="random seed of the study")
    analyze.add_argument("--out", type=Path, default=None, help="output folder (default RUN/analysis)")


def add_evaluate_and_render_parsers(sub) -> None:
    """`pderl-jax evaluate` and `pderl-jax render`: the same source flags."""
    for name, help_text in (("evaluate", "test episodes of a run's champion and RL actor (mean and std return)"),
                            ("render", "one episode of a run's champion as a GIF/MP4 of MuJoCo frames (brax: also "
                                       "its HTML viewer)")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("run", type=Path, nargs="?", default=None, help="a results folder of pderl-jax train")
        command.add_argument("--official", type=Path, default=None, metavar="FILE",
                             help="an official PDERL actor state dict (evo_net.pkl) instead of a run; needs --env")
        command.add_argument("--env", default="halfcheetah", metavar="TASK", help="task of --official (a task "
                             "name or a Gymnasium id)")
        add_environment_flags(command, "backend of --official", "brax physics of --official",
                              "time limit of --official episodes")
        add_preset_flag(command, " of --official (its network settings)")
        add_set_flag(command, "network settings of --official, e.g. network.actor_hidden=400,300")
        command.add_argument("--seed", type=int, default=0, help="seed of the episodes (default 0)")
        if name == "evaluate":
            command.add_argument("--episodes", type=int, default=10, help="episodes per actor (default 10)")
            command.add_argument("--json", type=Path, default=None, help="also write the returns to this JSON file")
        else:
            command.add_argument("--actor", default="champion", choices=["champion", "rl"],
                                 help="which actor of a run (default champion)")
            command.add_argument("--out", type=Path, default=None,
                                 help="output file: .html (brax), .gif or .mp4 (native MuJoCo; mp4 needs "
                                      "imageio[ffmpeg]); default RUN/episode.html or .gif")
            command.add_argument("--max-steps", type=int, default=None, help="stop the episode after this many steps")


def add_compare_parser(sub) -> None:
    """`pderl-jax compare`."""
    comparison = sub.add_parser("compare", help="methods x seeds on one task: the paper's Table 1 and Figure 4")
    comparison.add_argument("--env", default=None, metavar="TASK",
                            help="a task name or a Gymnasium id (default halfcheetah)")
    comparison.add_argument("--methods", default=None,
                            help="comma-separated: pderl, perl, derl, erl, td3, ddpg, ppo (default: the paper's six)")
    comparison.add_argument("--seeds", default=None, help=f"{SEEDS_HELP} (default 5: seeds 0..4)")
    comparison.add_argument("--frames", type=int, default=None, help="frames per run (default: the task's budget)")
    add_environment_flags(comparison, "mjx (default; seeds vmapped), brax (seeds vmapped) or native (seeds one "
                          "after another; no PPO)", "brax physics; implies --backend brax",
                          "time limit per episode (default 1000)")
    add_run_flags(comparison, "results folder (default results/compare-ENV)",
                  "overwrite an earlier comparison in --out")
    comparison.add_argument("--merge", type=Path, nargs="+", default=None, metavar="DIR",
                            help="instead of running: merge comparisons of other methods (same task, frames and "
                                 "seeds, e.g. run as separate jobs) into --out")
    comparison.add_argument("--resume", type=Path, default=None, metavar="DIR",
                            help="continue the comparison in DIR (stopped with Ctrl-C): finished methods are kept, "
                                 "the stopped one continues from its checkpoints, the rest run")
    add_preset_flag(comparison, " of every method except PPO")
    comparison.add_argument("--ppo-preset", default=None, metavar="|".join(PPO_PRESETS),
                            help="PPO's settings (default cleanrl: CleanRL's ppo_continuous_action, which is Baselines' "
                                 "ppo2 for MuJoCo; brax-notebook: brax's notebook, scaled to the budget)")
    add_set_flag(comparison, "override a setting for every method except PPO")
    add_process_flags(comparison)


def add_plot_and_memory_parsers(sub) -> None:
    """`pderl-jax plot` and `pderl-jax memory`."""
    plot = sub.add_parser("plot", help="learning curves (95%% interval across seeds), population spread and RL "
                                       "selection rates of runs, as PNG")
    plot.add_argument("runs", type=Path, nargs="+", help="run folders, sweep folders or folders of runs")
    plot.add_argument("--out", type=Path, default=None, help="output folder (default: the run, or results/plots)")

    memory = sub.add_parser("memory", help="print the memory estimate of a task's configuration")
    memory.add_argument("--env", default="halfcheetah", choices=TASKS)
    memory.add_argument("--obs-dim", type=int, default=17)
    memory.add_argument("--action-dim", type=int, default=6)
    add_algorithm_flags(memory, "pderl", "mode (default pderl)", "off-policy learner")
    add_set_flag(memory)


# Each command's handler takes the parsed arguments and the --set overrides.
COMMANDS = {
    "train": run_train, "sweep": run_sweep, "compare": run_compare, "memory": run_memory, "evaluate": run_evaluate,
    "render": run_render, "analyze": lambda args, _: run_analyze(args), "plot": lambda args, _: run_plot(args),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    joined = False
    try:
        if hasattr(args, "coordinator"):
            joined = start_processes(args)
        enable_compilation_cache()
        return COMMANDS[args.command](args, parse_overrides(getattr(args, "set", [])))
    except TrainingDiverged as error:
        print(f"pderl-jax: stopped: {error}", file=sys.stderr)
        return 3
    except ConfigError as error:
        print(f"pderl-jax: error: {error}", file=sys.stderr)
        return 2
    finally:
        if joined:
            from pderl_jax.training.distributed import finish

            finish(args.join_timeout)


if __name__ == "__main__":
    sys.exit(main())
