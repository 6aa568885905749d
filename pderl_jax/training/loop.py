"""`train`: one run, from its folder and initial (or restored) state through the driver to its summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax import lax

from pderl_jax.config import Config, ConfigError
from pderl_jax.envs.rollout import Environment
from pderl_jax.training.checkpoint import CHECKPOINT_DIR, Checkpointer
from pderl_jax.training.distributed import barrier, check_agreement, is_writer
from pderl_jax.training.driver import (Clock, Job, RunHooks, RunOptions, Track, compile_chunk, drive,
                                       reaches_multiple)
from pderl_jax.training.footprint import format_memory_estimate, memory_estimate
from pderl_jax.training.generation import Trainer
from pderl_jax.training.hostmem import current_rss_mib, peak_rss_mib
from pderl_jax.training.metrics import METRICS_FILE, MetricsLog, read_metrics
from pderl_jax.training.run_folder import check_out_dir, check_resume_fits, prepare_out_dir, run_record
from pderl_jax.training.sharding import population_shardings


def train(config: Config, env: Environment, out_dir: Path, options: RunOptions = RunOptions(), *,
          hooks: RunHooks = RunHooks(), resume: bool = False, force: bool = False,
          print_fn: Callable[[str], None] = print) -> dict:
    """Train until `config.frames` stored frames (or `options.max_generations`); returns the summary.

    Writes `config.json`, `metrics.csv` (one row per generation), checkpoints every
    `options.checkpoint.every` generations and at the end, and `summary.json` in `out_dir`; `hooks`
    add the rest (the CLI's: `learning_curve.png`, and the operator study every
    `options.analyze_every` generations into `out_dir/analysis/gen_<n>`). Like the official loop,
    the budget is checked between generations, so a run overshoots it by at most one chunk. With
    `resume`, the newest intact checkpoint is restored and the CSV continues from it, row for row
    as if never stopped. A NaN/inf in returns, losses or parameters raises `TrainingDiverged`
    naming the generation and quantity; the last checkpoint before it is kept. Ctrl-C checkpoints
    and returns (summary["interrupted"] is True).
    """
    options.validate()
    if options.analyze_every and hooks.analyze is None:
        raise ConfigError("--analyze-every needs an analysis hook: train(..., hooks=pderl_jax.analysis.run_hooks())")
    out_dir = Path(out_dir)
    clock = Clock()
    trainer = Trainer(config, env)
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    if resume:
        check_resume_fits(out_dir, config, like, env)
    _prepare_run_folder(out_dir, run_record(config, env, options), env, options, resume, force)
    print_fn(format_memory_estimate(memory_estimate(config, env.obs_dim, env.action_dim)))
    checkpointer = Checkpointer(out_dir, options.checkpoint)
    state, shardings, placement = _initial_state(trainer, like, env)
    rows = []
    if resume:
        state, clock.offset, rows = _restore(checkpointer, like, state, shardings, out_dir, print_fn)
    if len(jax.devices()) > 1:
        print_fn(placement)

    def chunk(state):
        return lax.scan(lambda s, _: trainer.generation(s), state, None, length=options.generations_per_call)

    step = compile_chunk(chunk, state)
    compile_s = clock() - clock.offset
    print_fn(f"compiled in {compile_s:.1f} s (peak host memory {peak_rss_mib():.0f} MiB, "
             f"now {current_rss_mib():.0f} MiB)")
    track = Track(MetricsLog(out_dir, rows, options.tensorboard, write=is_writer()), config.frames)
    job = Job(step, state, int(state.generation), [track])

    def analyze(state, first, last, print_fn):
        if config.has_population and reaches_multiple(options.analyze_every, first, last):
            hooks.analyze(trainer, state, out_dir, last, options.analyze_draws, print_fn)

    interrupted = drive(job, options, checkpointer, clock, after_chunk=analyze, print_fn=print_fn,
                        resume_hint=f"Restart every process with --resume {out_dir} to continue from the last "
                                    "checkpoint")
    summary = _summary(track.rows, clock(), compile_s, interrupted, out_dir)
    if is_writer():
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if hooks.finished is not None:
            hooks.finished(out_dir, print_fn)
    _report(summary, out_dir, print_fn)
    return summary


def _initial_state(trainer: Trainer, like, env: Environment):
    """The initial state, each device building only its share of the population; its shardings and
    placement in words."""
    shardings, placement = (population_shardings(like, trainer.config.evolution.pop_size) if not env.batched
                            else (None, "on 1 device (the physics steps on the host)"))
    # One program, not hundreds of eager ops.
    init = jax.jit(lambda seed: trainer.init(jax.random.key(seed)), out_shardings=shardings)
    return init(np.int32(trainer.config.seed)), shardings, placement


def _restore(checkpointer: Checkpointer, like, state, shardings, out_dir: Path, print_fn):
    """(state, wall time so far, CSV rows) of the newest intact checkpoint."""
    restored = checkpointer.restore_latest(like, state.replay, print_fn, shardings)
    if restored is None:
        raise ConfigError(f"no intact checkpoint in {out_dir / CHECKPOINT_DIR}; start the run again with --force")
    state, meta = restored
    rows = read_metrics(out_dir / METRICS_FILE, int(state.generation))
    print_fn(f"resuming from generation {int(state.generation)} ({int(state.frames)} frames)"
             + ("" if meta["replay"] else "; the replay buffer was not saved, so it starts empty "
                                         "and the run will differ from an uninterrupted one"))
    return state, meta["wall_s"], rows


def _summary(rows: list[dict], wall: float, compile_s: float, interrupted: bool, out_dir: Path) -> dict:
    last = rows[-1]
    finite_tests = [r["champion_test"] for r in rows if math.isfinite(r["champion_test"])]
    return {
        "generations": last["generation"], "frames": last["frames"], "wall_s": round(wall, 1),
        "frames_per_s": round(last["frames"] / wall, 1), "compile_s": round(compile_s, 1),
        "peak_rss_mib": round(peak_rss_mib()), "final_rss_mib": round(current_rss_mib()),
        "final_champion_test": last["champion_test"], "final_rl_test": last["rl_test"],
        "best_champion_test": max(finite_tests) if finite_tests else math.nan,
        "interrupted": interrupted, "out": str(out_dir),
    }


def _report(summary: dict, out_dir: Path, print_fn) -> None:
    if summary["interrupted"]:
        print_fn(f"interrupted after generation {summary['generations']}; checkpointed. Continue with "
                 f"pderl-jax train --resume {out_dir}")
    else:
        print_fn(f"done: {summary['generations']} generations, {summary['frames']} frames in {summary['wall_s']} s "
                 f"({summary['frames_per_s']} frames/s); champion test {summary['final_champion_test']:.1f} "
                 f"(best {summary['best_champion_test']:.1f}), RL actor {summary['final_rl_test']:.1f}; "
                 f"results in {out_dir}/metrics.csv")


def _prepare_run_folder(out_dir: Path, record: dict, env, options: RunOptions, resume: bool, force: bool) -> None:
    """Refuse what cannot run over several processes and settings they do not share; then the folder is
    checked by every process and changed by process 0 alone (`config.json` written, or a new run's claimed)."""
    if jax.process_count() > 1:
        if env.batched:
            raise ConfigError("the native MuJoCo backend steps on the host, so a run over several processes needs "
                              "a JAX backend: --backend mjx or brax")
        if options.analyze_every:
            raise ConfigError("--analyze-every runs in one process; run pderl-jax analyze on the run afterwards")
    check_agreement({**record, "out": str(out_dir.absolute()), "resume": resume, "force": force}, "run settings")
    if not resume:
        check_out_dir(out_dir, record, force)
        barrier("pderl-jax: run folder checked")
    if is_writer():
        if resume:
            (out_dir / "config.json").write_text(json.dumps(record, indent=2))  # e.g. a larger frame budget
        else:
            prepare_out_dir(out_dir, record)
    barrier("pderl-jax: run folder ready")


__all__ = ["train"]
