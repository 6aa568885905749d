"""The host loop: jitted chunks of generations, one CSV row per generation, checkpoints, progress, summary."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
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

from pderl_jax.config import Config, ConfigError, TrainingDiverged, to_dict
from pderl_jax.envs.rollout import Environment
from pderl_jax.training.checkpoint import CHECKPOINT_DIR, DAMAGED_DIR, CheckpointOptions, Checkpointer
from pderl_jax.training.footprint import format_memory_estimate, memory_estimate
from pderl_jax.training.generation import GenerationMetrics, Trainer, TrainState
from pderl_jax.training.hostmem import current_rss_mib, peak_rss_mib, release_freed_memory
from pderl_jax.training.sharding import shard_population

CSV_COLUMNS = ["generation", "frames", "wall_s", "best_fitness", "pop_mean", "pop_min", "pop_max",
               "champion_test", "rl_test", "critic_loss", "actor_loss", "elite_rate", "selected_rate",
               "discarded_rate", "synced"]
INT_COLUMNS = ("generation", "frames", "synced")


def metric_rows(metrics: GenerationMetrics, first_generation: int, wall_s: float) -> list[dict]:
    """CSV rows of a chunk of generations (metrics stacked on a leading axis)."""
    m = jax.tree.map(np.asarray, metrics)
    rows = []
    for i in range(m.frames.shape[0]):
        fitness = m.fitness[i] if m.fitness.shape[1] else np.full((1,), np.nan)  # learner-only modes
        rows.append({
            "generation": first_generation + i, "frames": int(m.frames[i]), "wall_s": round(wall_s, 3),
            "best_fitness": float(fitness.max()), "pop_mean": float(fitness.mean()),
            "pop_min": float(fitness.min()), "pop_max": float(fitness.max()),
            "champion_test": float(m.champion_test[i]), "rl_test": float(m.rl_test[i]),
            "critic_loss": float(m.critic_loss[i]), "actor_loss": float(m.actor_loss[i]),
            "elite_rate": float(m.elite_rate[i]), "selected_rate": float(m.selected_rate[i]),
            "discarded_rate": float(m.discarded_rate[i]), "synced": int(m.synced[i]),
        })
    return rows


def environment_record(env: Environment) -> dict:
    """What `config.json` records of the environment (enough to rebuild it)."""
    return {"name": getattr(env, "task", type(env).__name__), "backend": getattr(env, "backend", None),
            "episode_length": env.episode_length}


def environment_from_record(record: dict, task: str) -> Environment:
    """The environment a `config.json` environment record describes (inverse of `environment_record`)."""
    from pderl_jax.envs import make_environment

    if record["backend"] == "gymnasium":
        return make_environment(task, "gymnasium", episode_length=record["episode_length"])
    return make_environment(task, "brax", physics=record["backend"], episode_length=record["episode_length"])


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


# What a run writes into its folder (all removed by --force, nothing else is).
RUN_FILES = ("config.json", "metrics.csv", "summary.json", "learning_curve.png", CHECKPOINT_DIR, DAMAGED_DIR,
             "tensorboard", "analysis")


def claim_out_dir(out_dir: Path, record: dict, force: bool, files: tuple[str, ...] = RUN_FILES) -> None:
    """Make `out_dir` ready for a new run and write its `config.json`; never silently overwrite results.

    Only the files a run writes (`files`) are removed with `force`; anything else stays.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; choose a folder")
    existing = [name for name in files if (out_dir / name).exists() and name != "config.json"]
    if existing and not force:
        previous = out_dir / "config.json"
        same = previous.exists() and json.loads(previous.read_text()) == record
        what = "this run (same settings)" if same else "a different run"
        raise ConfigError(f"{out_dir} already holds {what} ({', '.join(existing)}); continue it with "
                          f"--resume {out_dir}, choose another --out, or pass --force to overwrite it")
    for name in files:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(record, indent=2))


def run_record(config: Config, env: Environment, options: RunOptions | None = None) -> dict:
    """The `config.json` of a run: every setting, the environment and how the run is driven."""
    record = {**to_dict(config), "environment": environment_record(env)}
    if options is not None:
        record["run"] = {"generations_per_call": options.generations_per_call,
                         "max_generations": options.max_generations, "checkpoint_every": options.checkpoint.every,
                         "keep_checkpoints": options.checkpoint.keep, "checkpoint_replay": options.checkpoint.replay}
    return record


def read_run_config(run_dir: Path) -> tuple[Config, dict, dict]:
    """(config, environment record, run options record) of a folder written by `train`."""
    from pderl_jax.config import from_dict, validate

    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: pass a folder written by pderl-jax train")
    try:
        raw = json.loads(path.read_text())
        environment, run = raw.pop("environment"), raw.pop("run", {})
    except (ValueError, KeyError, AttributeError) as error:
        raise ConfigError(f"{path} is not a run's config.json ({error})") from None
    config = from_dict(raw)
    validate(config)
    return config, environment, run


@dataclass
class SavedRun:
    """A run folder's settings, environment and newest intact checkpoint."""

    path: Path
    config: Config
    env: Environment
    trainer: Trainer
    state: TrainState
    meta: dict


def open_run(run_dir: Path, print_fn: Callable[[str], None] = print) -> SavedRun:
    """Rebuild a run's environment and trainer from `config.json` and restore its newest intact checkpoint."""
    config, environment, _ = read_run_config(run_dir)
    env = environment_from_record(environment, config.task)
    trainer = Trainer(config, env)
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    restored = Checkpointer(run_dir, CheckpointOptions()).restore_latest(
        like, fresh_replay=jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), like.replay), report=print_fn)
    if restored is None:
        raise ConfigError(f"no intact checkpoint in {Path(run_dir) / CHECKPOINT_DIR}: the run wrote none yet "
                          "(checkpoints are written every --checkpoint-every generations and at the end)")
    state, meta = restored
    return SavedRun(Path(run_dir), config, env, trainer, state, meta)


def nonfinite_quantities(metrics: GenerationMetrics, state: TrainState, first_generation: int) -> list[str]:
    """'generation G: QUANTITY' for each NaN/inf in a chunk's returns and losses or in the new parameters."""
    found = []
    m = jax.tree.map(np.asarray, metrics)
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
    for name, finite in jax.device_get(_finite_parameters(state)).items():
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
    if state.population is not None:
        parts["population parameters"] = state.population
    return {name: finite(tree) for name, tree in parts.items()}


class _StopAfterChunk:
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
    record = run_record(config, env, options)
    if resume:
        (out_dir / "config.json").write_text(json.dumps(record, indent=2))  # e.g. a larger frame budget
    else:
        claim_out_dir(out_dir, record, force)
    print_fn(format_memory_estimate(memory_estimate(config, env.obs_dim, env.action_dim)))

    trainer = Trainer(config, env)
    checkpointer = Checkpointer(out_dir, options.checkpoint)

    def chunk(state):
        return lax.scan(lambda s, _: trainer.generation(s), state, None, length=options.generations_per_call)

    start = time.perf_counter()
    state = jax.jit(trainer.init)(jax.random.key(config.seed))  # one program, not hundreds of eager ops
    wall_offset, rows = 0.0, []
    if resume:
        restored = checkpointer.restore_latest(jax.eval_shape(trainer.init, jax.random.key(0)), state.replay, print_fn)
        if restored is None:
            raise ConfigError(f"no intact checkpoint in {out_dir / CHECKPOINT_DIR}; start the run again with --force")
        state, meta = restored
        wall_offset = meta["wall_s"]
        rows = read_metrics(out_dir / "metrics.csv", int(state.generation))
        print_fn(f"resuming from generation {int(state.generation)} ({int(state.frames)} frames)"
                 + ("" if meta["replay"] else "; the replay buffer was not saved, so it starts empty "
                                             "and the run will differ from an uninterrupted one"))
    if len(jax.devices()) > 1 and not getattr(env, "batched", False):  # host callbacks stay on one device
        state, placement = shard_population(state, config.evolution.pop_size)
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

    logger = MetricsLog(out_dir, rows, options.tensorboard)
    bar = tqdm(total=config.frames, initial=min(int(state.frames), config.frames), unit="frame",
               disable=not options.progress, dynamic_ncols=True)
    with logger, _StopAfterChunk(bar.write) as stop:
        while running(state) and not stop.requested:
            first = int(state.generation) + 1
            frames_before = int(state.frames)
            state, metrics = step(state)
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
            if _reaches_multiple(options.checkpoint.every, first, last["generation"]):
                checkpoint(state)
            if config.has_population and _reaches_multiple(options.analyze_every, first, last["generation"]):
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


def _reaches_multiple(every: int, first: int, last: int) -> bool:
    """Whether generations first..last include a multiple of `every` (0: never)."""
    return bool(every) and last // every > (first - 1) // every


def read_metrics(path: Path, up_to_generation: int | None = None) -> list[dict]:
    """The rows of a `metrics.csv` (numbers parsed), optionally only up to a generation."""
    if not Path(path).exists():
        return []
    with open(path) as f:
        rows = [{k: (int(v) if k in INT_COLUMNS else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    return [r for r in rows if up_to_generation is None or r["generation"] <= up_to_generation]


class MetricsLog:
    """`metrics.csv` (rewritten with `rows` first, so a resumed run drops rows past its checkpoint), and
    optionally TensorBoard."""

    def __init__(self, out_dir: Path, rows: list[dict], tensorboard: bool):
        self.out_dir, self.rows, self.tensorboard = Path(out_dir), list(rows), tensorboard

    def __enter__(self):
        path = self.out_dir / "metrics.csv"
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS)
        self._board = None
        if self.tensorboard:
            from tensorboardX import SummaryWriter

            self._board = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self

    def write(self, rows: list[dict]) -> None:
        self._writer.writerows(rows)
        self._file.flush()
        self.rows.extend(rows)
        if self._board is not None:
            for row in rows:
                for name, value in row.items():
                    if name not in ("generation", "frames") and math.isfinite(value):
                        self._board.add_scalar(name, value, global_step=row["frames"])
            self._board.flush()

    def __exit__(self, *exc):
        self._file.close()
        if self._board is not None:
            self._board.close()
        return False


def _plot_learning_curve(out_dir: Path, print_fn) -> None:
    try:
        from pderl_jax.analysis.curves import plot_single_run

        plot_single_run(out_dir)
    except Exception as error:  # noqa: BLE001 - a figure must never cost the run its results
        print_fn(f"warning: learning_curve.png not drawn ({error})")


def _analyze_during_run(trainer, state, out_dir: Path, generation: int, draws: int, bar) -> None:
    from pderl_jax.analysis import analyze, format_summary

    key = jax.random.fold_in(jax.random.key(trainer.config.seed + 1_000_003), generation)
    summary = analyze(trainer, key, state.population, state.memories, state.learner.critic,
                      out_dir / "analysis" / f"gen_{generation:05d}", draws=draws,
                      metrics_csv=out_dir / "metrics.csv")
    bar.write(f"generation {generation}: " + format_summary(summary))


__all__ = ["train", "RunOptions", "TrainingDiverged", "claim_out_dir", "run_record", "read_run_config", "open_run", "SavedRun", "read_metrics", "metric_rows",
           "nonfinite_quantities", "environment_record", "environment_from_record", "CSV_COLUMNS"]
