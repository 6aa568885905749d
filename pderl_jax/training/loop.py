"""The host loop: jitted chunks of generations, one CSV row per generation, checkpoints, progress, summary."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm import tqdm

from pderl_jax.config import Config, ConfigError, TrainingDiverged
from pderl_jax.envs.rollout import Environment
from pderl_jax.training.checkpoint import CHECKPOINT_DIR, CheckpointOptions, Checkpointer
from pderl_jax.training.footprint import format_memory_estimate, memory_estimate
from pderl_jax.training.generation import GenerationMetrics, Trainer, TrainState
from pderl_jax.training.hostmem import current_rss_mib, peak_rss_mib, release_freed_memory
from pderl_jax.training.metrics import METRICS_FILE, MetricsLog, metric_rows, read_metrics
from pderl_jax.training.distributed import (any_process, barrier, check_agreement, is_writer, stop_on_lost_process,
                                            to_host)
from pderl_jax.training.run_folder import check_out_dir, check_resume_fits, prepare_out_dir, run_record
from pderl_jax.training.sharding import population_shardings

@dataclass(frozen=True)
class RunOptions:
    """How a run is driven (not part of the algorithm: changing these never changes a CSV row)."""

    generations_per_call: int = 1  # generations per compiled call; checkpoints and Ctrl-C act between calls
    max_generations: int = 0  # stop after this many generations as well (0: the frame budget alone)
    checkpoint: CheckpointOptions = CheckpointOptions()
    progress: bool = True
    analyze_every: int = 0  # operator study every N generations (0: never)
    analyze_draws: int = 10
    tensorboard: bool = False  # also log every CSV column to OUT/tensorboard (needs tensorboardX)

    def validate(self) -> None:
        if self.generations_per_call < 1:
            raise ConfigError("--generations-per-call must be at least 1")
        if self.max_generations < 0:
            raise ConfigError("--generations must be 0 (no limit) or a positive number of generations")
        if self.analyze_every < 0:
            raise ConfigError("--analyze-every must be 0 (never) or a positive number of generations")
        self.checkpoint.validate()
        if self.tensorboard:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                raise ConfigError("--tensorboard needs tensorboardX: pip install 'pderl-jax[tensorboard]'") from None


def nonfinite_quantities(metrics: GenerationMetrics, state: TrainState, first_generation: int) -> list[str]:
    """'generation G: QUANTITY' for each NaN/inf in a chunk's returns and losses or in the new parameters."""
    found = []
    m = jax.tree.map(np.asarray, to_host(metrics))
    for name in ("fitness", "champion_test", "rl_test", "critic_loss", "actor_loss"):
        values = getattr(m, name).reshape(m.frames.shape[0], -1)
        bad = ~np.isfinite(values).all(axis=1)
        if name.endswith("_loss"):
            # A NaN loss also means "no update taken" (before learning starts; TD3's delayed actor), so
            # NaN counts only for the critic in the chunk's last generation once updates have run.
            # Diverged updates show up in the parameters, checked below, in any case.
            bad = np.isinf(values).any(axis=1)
            if name == "critic_loss" and int(state.learner.num_updates) > 0:
                bad[-1] |= bool(np.isnan(values[-1]).any())
        if bad.any():
            found.append(f"generation {first_generation + int(np.argmax(bad))}: {name.replace('_', ' ')}")
    last = int(state.generation)
    for name, finite in to_host(_finite_parameters(state)).items():
        if not finite:
            found.append(f"generation {last}: {name}")
    return found


@jax.jit
def _finite_parameters(state: TrainState) -> dict:
    def finite(tree):
        return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
    learner = state.learner
    parts = {"RL actor parameters": learner.actor, "critic parameters": learner.critic,
             "target network parameters": (learner.actor_target, learner.critic_target)}
    if state.evolution is not None:
        parts["population parameters"] = state.evolution.population.members
    return {name: finite(tree) for name, tree in parts.items()}


class StopAfterChunk:
    """SIGINT (Ctrl-C) finishes the current chunk, then the run checkpoints and exits; a second one aborts."""

    def __init__(self, print_fn):
        self.requested = False
        self._print = print_fn
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._print("\ninterrupt: finishing the current generations, then checkpointing (Ctrl-C again to abort)")

    def agreed(self) -> bool:
        """Whether to stop now; over several processes every one stops after the same chunk, wherever
        Ctrl-C arrived."""
        if jax.process_count() > 1:
            self.requested = any_process(self.requested)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def train(config: Config, env: Environment, out_dir: Path, options: RunOptions = RunOptions(), *,
          resume: bool = False, force: bool = False, print_fn: Callable[[str], None] = print) -> dict:
    """Train until `config.frames` stored frames (or `options.max_generations`); returns the summary.

    Writes `config.json`, `metrics.csv` (one row per generation), checkpoints every
    `options.checkpoint.every` generations and at the end, `summary.json` and
    `learning_curve.png` in `out_dir`. Like the official loop, the budget is checked between
    generations, so a run overshoots it by at most one chunk. With `resume`, the newest intact
    checkpoint is restored and the CSV continues from it, row for row as if never stopped. A
    NaN/inf in returns, losses or parameters raises `TrainingDiverged` naming the generation
    and quantity; the last checkpoint before it is kept. Ctrl-C checkpoints and returns
    (summary["interrupted"] is True). With `options.analyze_every` N > 0, the operator study runs
    every N generations into `out_dir/analysis/gen_<n>` on its own random stream.
    """
    options.validate()
    out_dir = Path(out_dir)
    trainer = Trainer(config, env)
    start = time.perf_counter()
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    if resume:
        check_resume_fits(out_dir, config, like, env)
    _prepare_run_folder(out_dir, run_record(config, env, options), env, options, resume, force)
    writer = is_writer()
    print_fn(format_memory_estimate(memory_estimate(config, env.obs_dim, env.action_dim)))

    checkpointer = Checkpointer(out_dir, options.checkpoint)

    def chunk(state):
        return lax.scan(lambda s, _: trainer.generation(s), state, None, length=options.generations_per_call)

    shardings, placement = population_shardings(like, config.evolution.pop_size) if not getattr(
        env, "batched", False) else (None, "on 1 device (the physics steps on the host)")
    # One program, not hundreds of eager ops; each device builds only its share of the population.
    state = jax.jit(lambda seed: trainer.init(jax.random.key(seed)), out_shardings=shardings)(np.int32(config.seed))
    wall_offset, rows = 0.0, []
    if resume:
        restored = checkpointer.restore_latest(like, state.replay, print_fn, shardings)
        if restored is None:
            raise ConfigError(f"no intact checkpoint in {out_dir / CHECKPOINT_DIR}; start the run again with --force")
        state, meta = restored
        wall_offset = meta["wall_s"]
        rows = read_metrics(out_dir / METRICS_FILE, int(state.generation))
        print_fn(f"resuming from generation {int(state.generation)} ({int(state.frames)} frames)"
                 + ("" if meta["replay"] else "; the replay buffer was not saved, so it starts empty "
                                             "and the run will differ from an uninterrupted one"))
    if len(jax.devices()) > 1:
        print_fn(placement)
    step = jax.jit(chunk, donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - start
    release_freed_memory()
    print_fn(f"compiled in {compile_s:.1f} s (peak host memory {peak_rss_mib():.0f} MiB, "
             f"now {current_rss_mib():.0f} MiB)")

    def elapsed():
        return wall_offset + time.perf_counter() - start

    def checkpoint(current):
        checkpointer.save(current, {"wall_s": elapsed(), "frames": int(current.frames),
                                    "generations_per_call": options.generations_per_call})

    def running(current):
        within_generations = not options.max_generations or int(current.generation) < options.max_generations
        return int(current.frames) <= config.frames and within_generations  # official: while frames <= budget

    logger = MetricsLog(out_dir, rows, options.tensorboard, write=writer)
    bar = tqdm(total=config.frames, initial=min(int(state.frames), config.frames), unit="frame",
               disable=not (options.progress and writer), dynamic_ncols=True)
    resume_hint = f"Restart every process with --resume {out_dir} to continue from the last checkpoint"
    with logger, StopAfterChunk(bar.write) as stop, stop_on_lost_process(resume_hint=resume_hint):
        while running(state) and not stop.agreed():
            first = int(state.generation) + 1
            frames_before = int(state.frames)
            state, metrics = step(state)
            metrics = to_host(metrics)
            new_rows = metric_rows(metrics, first, elapsed())
            logger.write(new_rows)
            problems = nonfinite_quantities(metrics, state, first)
            if problems:
                bar.close()
                kept = checkpointer.steps()
                raise TrainingDiverged(
                    f"{'; '.join(problems)} became NaN or infinite; the run stopped without checkpointing it. "
                    + (f"The last good checkpoint is generation {kept[-1]} in {checkpointer.directory}. " if kept
                       else "")
                    + "Lower the learning rates or the mutation strength (--set learner.critic_lr=...), or check "
                      "the environment's rewards")
            last = new_rows[-1]
            bar.update(min(last["frames"], config.frames) - min(frames_before, config.frames))
            if reaches_multiple(options.checkpoint.every, first, last["generation"]):
                checkpoint(state)
            if config.has_population and reaches_multiple(options.analyze_every, first, last["generation"]):
                _analyze_during_run(trainer, state, out_dir, last["generation"], options.analyze_draws, bar)
            bar.set_postfix(gen=last["generation"], fps=f"{last['frames'] / elapsed():.0f}",
                            test=f"{last['champion_test']:.1f}", rl=f"{last['rl_test']:.1f}")
        bar.close()
        checkpoint(state)
    rows = logger.rows
    wall = elapsed()
    last = rows[-1]
    finite_tests = [r["champion_test"] for r in rows if math.isfinite(r["champion_test"])]
    summary = {
        "generations": last["generation"], "frames": last["frames"], "wall_s": round(wall, 1),
        "frames_per_s": round(last["frames"] / wall, 1), "compile_s": round(compile_s, 1),
        "peak_rss_mib": round(peak_rss_mib()), "final_rss_mib": round(current_rss_mib()),
        "final_champion_test": last["champion_test"], "final_rl_test": last["rl_test"],
        "best_champion_test": max(finite_tests) if finite_tests else math.nan,
        "interrupted": stop.requested, "out": str(out_dir),
    }
    if writer:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        _plot_learning_curve(out_dir, print_fn)
    if stop.requested:
        print_fn(f"interrupted after generation {last['generation']}; checkpointed. Continue with "
                 f"pderl-jax train --resume {out_dir}")
    else:
        print_fn(f"done: {summary['generations']} generations, {summary['frames']} frames in {summary['wall_s']} s "
                 f"({summary['frames_per_s']} frames/s); champion test {summary['final_champion_test']:.1f} "
                 f"(best {summary['best_champion_test']:.1f}), RL actor {summary['final_rl_test']:.1f}; "
                 f"results in {out_dir}/metrics.csv")
    return summary


def _prepare_run_folder(out_dir: Path, record: dict, env, options: RunOptions, resume: bool, force: bool) -> None:
    """Refuse what cannot run over several processes and settings they do not share; then the folder is
    checked by every process and changed by process 0 alone (`config.json` written, or a new run's claimed)."""
    if jax.process_count() > 1:
        if getattr(env, "batched", False):
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


def reaches_multiple(every: int, first: int, last: int) -> bool:
    """Whether generations first..last include a multiple of `every` (0: never)."""
    return bool(every) and last // every > (first - 1) // every


def _plot_learning_curve(out_dir: Path, print_fn) -> None:
    try:
        from pderl_jax.analysis.curves import plot_single_run

        plot_single_run(out_dir)
    except Exception as error:  # noqa: BLE001 - a figure must never cost the run its results
        print_fn(f"warning: learning_curve.png not drawn ({error})")


def _analyze_during_run(trainer, state, out_dir: Path, generation: int, draws: int, bar) -> None:
    from pderl_jax.analysis import analyze, format_summary

    key = jax.random.fold_in(jax.random.key(trainer.config.seed + 1_000_003), generation)
    summary = analyze(trainer, key, state.evolution.population, state.learner.critic,
                      out_dir / "analysis" / f"gen_{generation:05d}", draws=draws,
                      metrics_csv=out_dir / METRICS_FILE)
    bar.write(f"generation {generation}: " + format_summary(summary))


__all__ = ["train", "RunOptions", "StopAfterChunk", "TrainingDiverged", "nonfinite_quantities", "reaches_multiple"]
