"""The host loop every run goes through: `train` drives one run, `sweep` many stacked runs, `compare` both.

A job is a compiled chunk of generations and the runs it advances (one, or a sweep's stacked
runs). The driver calls the chunk until every run has used its frame budget, and after each
chunk: writes each run's CSV rows, stops on NaN/inf naming the run, checkpoints every
`checkpoint.every` generations, calls the caller's hook (the operator study, for instance), and
updates the progress bar. Ctrl-C finishes the chunk, checkpoints and returns; so does a lost
process, through `stop_on_lost_process`. Nothing here changes what a generation computes: the
same seed writes the same rows whether a run goes alone or in a sweep.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from pderl_jax.config import ConfigError, TrainingDiverged
from pderl_jax.training.checkpoint import CheckpointOptions, Checkpointer
from pderl_jax.training.distributed import any_process, is_writer, stop_on_lost_process, to_host
from pderl_jax.training.generation import GenerationMetrics, TrainState
from pderl_jax.training.hostmem import release_freed_memory
from pderl_jax.training.metrics import MetricsLog, metric_rows


@dataclass(frozen=True)
class RunOptions:
    """How a run is driven (not part of the algorithm: changing these never changes a CSV row)."""

    generations_per_call: int = 1  # generations per compiled call; checkpoints and Ctrl-C act between calls
    max_generations: int = 0  # stop after this many generations as well (0: the frame budget alone)
    checkpoint: CheckpointOptions = CheckpointOptions()
    progress: bool = True
    analyze_every: int = 0  # operator study every N generations (0: never); needs `RunHooks.analyze`
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


@dataclass(frozen=True)
class RunHooks:
    """What the caller adds to a run, as brax's `progress_fn` does; the CLI fills them in
    (`pderl_jax.analysis.run_hooks`), so training itself imports no analysis.

    `analyze(trainer, state, out_dir, generation, draws, print_fn)` runs the operator study when
    `RunOptions.analyze_every` asks for it; `finished(out_dir, print_fn)` runs once a run's files are
    written (the learning-curve figure)."""

    analyze: Callable[..., None] | None = None
    finished: Callable[[Path, Callable[[str], None]], None] | None = None


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


def reaches_multiple(every: int, first: int, last: int) -> bool:
    """Whether generations first..last include a multiple of `every` (0: never)."""
    return bool(every) and last // every > (first - 1) // every


def compile_chunk(chunk: Callable, *args):
    """`chunk` compiled for `args` (its first argument donated); the compiler's freed pages go back to the OS."""
    step = jax.jit(chunk, donate_argnums=0).lower(*args).compile()
    release_freed_memory()
    return step


@jax.jit
def finite_parameters(state: TrainState) -> dict:
    """Whether each group of a run's parameters is free of NaN and inf."""
    def finite(tree):
        return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
    learner = state.learner
    parts = {"RL actor parameters": learner.actor, "critic parameters": learner.critic,
             "target network parameters": (learner.actor_target, learner.critic_target)}
    if state.evolution is not None:
        parts["population parameters"] = state.evolution.population.members
    return {name: finite(tree) for name, tree in parts.items()}


def run_health(state: TrainState) -> dict:
    """What the NaN check reads of a run's state: parameter finiteness, its generation, whether updates ran."""
    return {"finite": finite_parameters(state), "generation": state.generation,
            "updated": state.learner.num_updates > 0}


def nonfinite_quantities(metrics: GenerationMetrics, health: dict, first_generation: int) -> list[str]:
    """'generation G: QUANTITY' for each NaN/inf in a run's chunk of returns and losses or in its
    parameters (`health`: `run_health` of its state after the chunk, on the host)."""
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
            if name == "critic_loss" and bool(health["updated"]):
                bad[-1] |= bool(np.isnan(values[-1]).any())
        if bad.any():
            found.append(f"generation {first_generation + int(np.argmax(bad))}: {name.replace('_', ' ')}")
    for name, finite in health["finite"].items():
        if not bool(finite):
            found.append(f"generation {int(health['generation'])}: {name}")
    return found


@dataclass
class Track:
    """One run's progress on the host: its CSV log, and its frame budget (done once a row passes it)."""

    log: MetricsLog
    budget: int
    name: str = ""  # how a message names the run ("" for a lone run)

    @property
    def rows(self) -> list[dict]:
        return self.log.rows

    @property
    def done(self) -> bool:
        return bool(self.rows) and self.rows[-1]["frames"] > self.budget


@dataclass
class Job:
    """A compiled chunk of generations and the runs it advances.

    `step(state) -> (state, metrics)`; with `stacked`, every leaf of the state and metrics has the runs
    on an axis (the state's first, the metrics' second, after the chunk's generations). A lone run
    writes every row of a chunk; a stacked run stops writing at its first row past the budget,
    while the others finish. `run_finished(state, i, wall_s)` is called once for each run that
    reaches its budget (a sweep checkpoints it into its own folder)."""

    step: Callable
    state: Any
    generation: int  # generations done so far (all runs advance together)
    tracks: list[Track]
    stacked: bool = False
    run_finished: Callable[[Any, int, float], None] | None = None


class Clock:
    """Wall time of a run, continuing across resumes."""

    def __init__(self, offset: float = 0.0):
        self.start, self.offset = time.perf_counter(), offset

    def __call__(self) -> float:
        return self.offset + time.perf_counter() - self.start


def drive(job: Job, options: RunOptions, checkpointer: Checkpointer, clock: Clock, *, resume_hint: str, after_chunk: Callable[[Any, int, int, Callable], None] | None = None,
          print_fn: Callable[[str], None] = print) -> bool:
    """Advance `job` until every run has used its budget, `options.max_generations` is reached or
    Ctrl-C; checkpoint at the end. Returns whether Ctrl-C stopped it. A NaN/inf raises
    `TrainingDiverged` naming the run, the generation and the quantity, with nothing checkpointed
    past the last good checkpoint. `after_chunk(state, first, last, print_fn)` runs after each chunk."""
    bar = _progress_bar(job, options)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        for track in job.tracks:
            stack.enter_context(track.log)
        stop = stack.enter_context(StopAfterChunk(bar.write))
        stack.enter_context(stop_on_lost_process(resume_hint=resume_hint))
        while _running(job, options) and not stop.agreed():
            first = job.generation + 1
            job.state, metrics = job.step(job.state)
            job.generation += options.generations_per_call
            metrics = to_host(metrics)
            finished = _write_rows(job, metrics, first, clock(), bar)
            _stop_on_divergence(job, metrics, first, checkpointer, bar)
            for i in finished:
                if job.run_finished is not None:
                    job.run_finished(job.state, i, clock())
            if reaches_multiple(options.checkpoint.every, first, job.generation):
                save_checkpoint(checkpointer, job, options, clock())
            if after_chunk is not None:
                after_chunk(job.state, first, job.generation, bar.write)
            bar.set_postfix(**_postfix(job, clock()))
        bar.close()
        save_checkpoint(checkpointer, job, options, clock())
    return stop.requested


def save_checkpoint(checkpointer: Checkpointer, job: Job, options: RunOptions, wall_s: float) -> None:
    checkpointer.save(job.state, {"wall_s": wall_s, "generation": job.generation,
                                  "generations_per_call": options.generations_per_call})


def _running(job: Job, options: RunOptions) -> bool:
    within_generations = not options.max_generations or job.generation < options.max_generations
    return within_generations and not all(track.done for track in job.tracks)


def _progress_bar(job: Job, options: RunOptions) -> tqdm:
    used = sum(min(t.rows[-1]["frames"], t.budget) for t in job.tracks if t.rows)
    return tqdm(total=sum(t.budget for t in job.tracks), initial=used, unit="frame",
                disable=not (options.progress and is_writer()), dynamic_ncols=True)


def _run_metrics(job: Job, metrics, i: int):
    return jax.tree.map(lambda x: x[:, i], metrics) if job.stacked else metrics


def _write_rows(job: Job, metrics, first: int, wall_s: float, bar: tqdm) -> list[int]:
    """Write each unfinished run's rows of the chunk (official: a run goes on while frames <= budget);
    the runs that reached their budget in it."""
    finished = []
    for i, track in enumerate(job.tracks):
        if track.done:
            continue
        for row in metric_rows(_run_metrics(job, metrics, i), first, wall_s):
            before = track.rows[-1]["frames"] if track.rows else 0
            track.log.write([row])
            bar.update(min(row["frames"], track.budget) - min(before, track.budget))
            if track.done and job.stacked:  # later generations of a stacked run are computed, not written
                break
        if track.done:
            finished.append(i)
    return finished


_health = {False: jax.jit(run_health), True: jax.jit(jax.vmap(run_health))}  # a lone run, stacked runs


def _stop_on_divergence(job: Job, metrics, first: int, checkpointer: Checkpointer, bar: tqdm) -> None:
    health = to_host(_health[job.stacked](job.state))
    problems = []
    for i, track in enumerate(job.tracks):
        run_health_i = jax.tree.map(lambda x: x[i], health) if job.stacked else health
        found = nonfinite_quantities(_run_metrics(job, metrics, i), run_health_i, first)
        if found:
            problems.append(f"{track.name}: " * bool(track.name) + "; ".join(found))
    if not problems:
        return
    bar.close()
    kept = checkpointer.steps()
    where = ("The other runs' rows up to then are in their metrics.csv. " if job.stacked else "")
    raise TrainingDiverged(
        f"{' | '.join(problems)} became NaN or infinite; the {'sweep' if job.stacked else 'run'} stopped without "
        "checkpointing it. " + where
        + (f"The last good checkpoint is generation {kept[-1]} in {checkpointer.directory}. " if kept else "")
        + "Lower the learning rates or the mutation strength (--set learner.critic_lr=...)"
        + (", or leave the diverging settings out of the sweep" if job.stacked else "")
        + ", or check the environment's rewards")


def _postfix(job: Job, wall_s: float) -> dict:
    frames = sum(t.rows[-1]["frames"] for t in job.tracks if t.rows)
    if job.stacked:
        return {"done": f"{sum(t.done for t in job.tracks)}/{len(job.tracks)}", "fps": f"{frames / wall_s:.0f}"}
    last = job.tracks[0].rows[-1]
    return {"gen": last["generation"], "fps": f"{frames / wall_s:.0f}", "test": f"{last['champion_test']:.1f}",
            "rl": f"{last['rl_test']:.1f}"}


__all__ = ["Clock", "Job", "RunHooks", "RunOptions", "StopAfterChunk", "Track", "compile_chunk", "drive",
           "finite_parameters", "nonfinite_quantities", "reaches_multiple", "run_health", "save_checkpoint"]
