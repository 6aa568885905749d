"""S independent runs (seeds x hyperparameter values) as one vmapped, compiled program.

Every run has the same structure (task, population size, network sizes, mode); what differs is
its seed and any float setting (learning rates, tau, gamma, sigmas, ...), which reach the
generation as traced leaves of a stacked `Config`. The run axis is sharded over the devices
when it divides evenly (over several processes it must: each computes its share, and the
metrics are gathered to all of them). Each run writes its own `run_<i>/metrics.csv`,
`config.json` and, once finished, checkpoint (the same files as a single run), and `runs.csv`
summarises them all. `sweep.json` and the stacked checkpoints in `checkpoints/` let a stopped
sweep continue (`pderl-jax sweep --resume DIR`). With several processes, process 0 writes every file.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pderl_jax.config import SECTIONS, Config, ConfigError, from_dict, override, to_dict, validate
from pderl_jax.envs.rollout import Environment
from pderl_jax.training.checkpoint import CHECKPOINT_DIR, DAMAGED_DIR, CheckpointOptions, Checkpointer
from pderl_jax.training.distributed import barrier, check_agreement, is_writer
from pderl_jax.training.driver import Clock, Job, RunOptions, Track, compile_chunk, drive
from pderl_jax.training.generation import Trainer
from pderl_jax.training.metrics import METRICS_FILE, MetricsLog, read_metrics
from pderl_jax.training.run_folder import environment_record, prepare_out_dir, run_record
from pderl_jax.training.sharding import leading_axis_sharding, place, placement, replicated_sharding


@dataclasses.dataclass(frozen=True)
class Run:
    index: int
    seed: int
    values: dict  # the swept settings of this run ("section.field": value)
    config: Config


def sweepable_fields() -> list[str]:
    """The settings a sweep may vary: every float that reaches the program as a traced leaf."""
    names = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("pytree_node", True) and isinstance(f.default, float):
                names.append(f"{section}.{f.name}")
    return names


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    """["learner.actor_lr=1e-4,5e-5", ...] -> {"learner.actor_lr": [1e-4, 5e-5], ...}."""
    allowed = sweepable_fields()
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ConfigError(f"--grid {item!r} must look like section.field=v1,v2 (e.g. learner.actor_lr=1e-4,5e-5)")
        if name not in allowed:
            raise ConfigError(f"--grid {name}: only float settings can vary inside one program; sweepable: "
                              f"{', '.join(allowed)} (structural settings such as sizes need separate runs)")
        try:
            grid[name] = [float(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"--grid {item!r}: values must be numbers") from None
    return grid


def expand_runs(base: Config, seeds: list[int], grid: dict[str, list[float]]) -> list[Run]:
    """The cartesian product seeds x grid values, each validated."""
    names = list(grid)
    combos = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    return [make_run(base, index, seed, values)
            for index, (values, seed) in enumerate(itertools.product(combos, seeds))]


def make_run(base: Config, index: int, seed: int, values: dict) -> Run:
    """Run `index`: the base config with its seed and swept values, validated."""
    config = base.replace(seed=seed)
    for name, value in values.items():
        config = override(config, name, value)
    validate(config)
    return Run(index=index, seed=seed, values=dict(values), config=config)


def stack_hparams(runs: list[Run]) -> Config:
    """The runs' configs stacked leaf-wise ([S] floats); seeds live in the keys, not here."""
    seed = runs[0].config.seed
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]),
                        *[r.config.replace(seed=seed) for r in runs])


def initial_states(trainer: Trainer, runs: list[Run]):
    """The runs' initial states and stacked settings, their run axis sharded over the devices (each
    device builds only its runs); also that sharding and the placement in words."""
    sharding = leading_axis_sharding(len(runs), "runs")
    init = jax.jit(lambda seeds: jax.vmap(trainer.init)(jax.vmap(jax.random.key)(seeds)), out_shardings=sharding)
    states = init(np.asarray([r.seed for r in runs], np.int32))
    hparams = place(jax.device_get(stack_hparams(runs)), sharding)
    return states, hparams, sharding, placement(sharding, len(runs))


SWEEP_FILE = "sweep.json"  # the sweep's settings and runs, read back by --resume
SWEEP_FILES = (SWEEP_FILE, "runs.csv", "summary.json", CHECKPOINT_DIR, DAMAGED_DIR)  # besides the run_<i> folders


def sweep_record(base: Config, runs: list[Run], env: Environment, options: RunOptions) -> dict:
    """What `sweep.json` holds: enough to rebuild the sweep and continue it."""
    return {"config": to_dict(base), "runs": [{"seed": r.seed, "values": r.values} for r in runs],
            "environment": environment_record(env), "run": run_record(base, env, options)["run"]}


def read_sweep(out_dir: Path) -> tuple[Config, list[Run], dict, dict]:
    """(base config, runs, environment record, run options record) of a sweep folder's `sweep.json`."""
    path = Path(out_dir) / SWEEP_FILE
    if not path.exists():
        raise ConfigError(f"{path} not found: --resume takes a folder written by pderl-jax sweep (version 0.6 or "
                          "later)")
    try:
        record = json.loads(path.read_text())
        base = from_dict(record["config"])
        validate(base)
        runs = [make_run(base, i, run["seed"], run["values"]) for i, run in enumerate(record["runs"])]
        return base, runs, record["environment"], record["run"]
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path} is not a sweep record ({type(error).__name__}: {error})") from None


def train_sweep(base: Config, runs: list[Run], env: Environment, out_dir: Path, options: RunOptions = RunOptions(),
                *, resume: bool = False, force: bool = False,
                print_fn: Callable[[str], None] = print) -> list[dict]:
    """Train all runs together until each has used `base.frames` frames; returns one summary per run.

    Like a single run, each run stops at the first generation that takes it past the budget; its
    later generations (while other runs finish) are computed but not written. When a run finishes,
    its state is checkpointed into its own folder, so `pderl-jax analyze/evaluate/render` read a
    sweep's run like any other. The sweep checkpoints all runs every `options.checkpoint.every`
    generations, at the end and on Ctrl-C (or after `options.max_generations`); `resume` continues
    from the newest intact one, row for row as if never stopped. A run whose returns, losses or
    parameters become NaN or infinite stops the sweep (`TrainingDiverged` names the run, its seed and
    settings, the generation and the quantity): every run's rows up to then stay in its
    `metrics.csv`, and nothing is checkpointed past the last good checkpoint. A folder holding an
    earlier sweep is refused unless `force`.
    """
    _refuse_unsweepable(env, options)
    options.validate()
    out_dir = Path(out_dir)
    _prepare_sweep_folder(out_dir, sweep_record(base, runs, env, options), runs, env, resume, force)
    clock = Clock()
    trainer = Trainer(base, env)
    run_dirs = [out_dir / f"run_{run.index:03d}" for run in runs]
    checkpointer = Checkpointer(out_dir, options.checkpoint)
    states, hparams, sharding, where = initial_states(trainer, runs)
    print_fn(f"sweep: {len(runs)} runs, {where}")
    generation, rows = 0, [[] for _ in runs]  # the runs advance together
    if resume:
        states, generation, clock.offset, rows = _restore_sweep(checkpointer, states, sharding, run_dirs, print_fn)

    def chunk(states, hparams):
        return lax.scan(lambda s, _: jax.vmap(trainer.generation)(s, hparams), states, None,
                        length=options.generations_per_call)

    step = compile_chunk(chunk, states, hparams)
    compile_s = clock() - clock.offset
    print_fn(f"compiled in {compile_s:.1f} s")
    tracks = [Track(MetricsLog(d, r, write=is_writer()), base.frames, name=_run_name(run))
              for d, r, run in zip(run_dirs, rows, runs)]

    def run_finished(states, i, wall_s):
        _checkpoint_run(states, i, run_dirs[i], options.checkpoint, wall_s)

    job = Job(lambda states: step(states, hparams), states, generation, tracks, stacked=True,
              run_finished=run_finished)
    drive(job, options, checkpointer, clock, print_fn=print_fn,
          resume_hint=f"Restart every process with pderl-jax sweep --resume {out_dir} to continue from the last "
                      "checkpoint")
    return _finish_sweep(runs, tracks, job.generation, clock(), compile_s, out_dir, print_fn)


def _refuse_unsweepable(env: Environment, options: RunOptions) -> None:
    if env.batched:
        raise ConfigError("sweeps vmap the environment, so they need a JAX backend (--backend mjx or brax; the "
                          "native MuJoCo backend steps on the host); run native seeds as separate pderl-jax train runs")
    if options.analyze_every or options.tensorboard:
        raise ConfigError("--analyze-every and --tensorboard are options of pderl-jax train; run pderl-jax analyze "
                          "on a sweep's run_<i> folders afterwards")


def _run_name(run: Run) -> str:
    """How a message names a run: its index, seed and swept settings."""
    settings = "".join(f", {name}={value:g}" for name, value in run.values.items())
    return f"run {run.index} (seed {run.seed}{settings})"


def _restore_sweep(checkpointer: Checkpointer, states, sharding, run_dirs: list[Path], print_fn):
    """(states, generation, wall time so far, each run's CSV rows) of the newest intact checkpoint."""
    like = jax.eval_shape(lambda s: s, states)
    restored = checkpointer.restore_latest(like, states.replay, print_fn, jax.tree.map(lambda _: sharding, like))
    if restored is None:
        raise ConfigError(f"no intact checkpoint in {checkpointer.directory}; start the sweep again with --force")
    states, meta = restored
    generation = meta["generation"]
    print_fn(f"resuming from generation {generation}" + ("" if meta["replay"] else
             "; the replay buffers were not saved, so they start empty and the runs will differ from "
             "uninterrupted ones"))
    return states, generation, meta["wall_s"], [read_metrics(d / METRICS_FILE, generation) for d in run_dirs]


def _finish_sweep(runs: list[Run], tracks: list[Track], generation: int, wall: float, compile_s: float,
                  out_dir: Path, print_fn) -> list[dict]:
    """Each run's summary; once every run is done, `runs.csv` and `summary.json` too."""
    summaries = [_run_summary(run, track.rows) for run, track in zip(runs, tracks) if track.rows]
    done = sum(track.done for track in tracks)
    if done < len(runs):
        print_fn(f"stopped after generation {generation} ({done} of {len(runs)} runs done); checkpointed. "
                 f"Continue with pderl-jax sweep --resume {out_dir}")
        return [{**s, "interrupted": True} for s in summaries]
    if is_writer():
        with open(out_dir / "runs.csv", "w", newline="") as f:
            table = csv.DictWriter(f, fieldnames=list(summaries[0]))
            table.writeheader()
            table.writerows(summaries)
        (out_dir / "summary.json").write_text(json.dumps(
            {"runs": len(runs), "processes": jax.process_count(), "wall_s": round(wall, 1),
             "compile_s": round(compile_s, 1),
             "frames_per_s": round(sum(s["frames"] for s in summaries) / wall, 1)}, indent=2))
    print_fn(format_table(summaries))
    print_fn(f"done: {len(runs)} runs in {wall:.1f} s (compile {compile_s:.1f} s); results in {out_dir}/run_*/ "
             f"and {out_dir}/runs.csv")
    return [{**s, "interrupted": False} for s in summaries]


def _prepare_sweep_folder(out_dir: Path, record: dict, runs: list[Run], env: Environment, resume: bool,
                          force: bool) -> None:
    """Check the folder (every process), then process 0 alone clears an earlier sweep (with `force`) and
    writes `sweep.json` and each run's `config.json`; a resumed sweep's folder is left as it is."""
    check_agreement({**record, "out": str(out_dir.absolute()), "resume": resume, "force": force}, "sweep settings")
    previous = sorted(p.name for p in out_dir.glob("run_[0-9][0-9][0-9]")) if out_dir.is_dir() else []
    earlier = previous + [name for name in SWEEP_FILES if (out_dir / name).exists()]
    if earlier and not (force or resume):
        raise ConfigError(f"{out_dir} already holds a sweep ({', '.join(earlier[:3])}...); continue it with "
                          f"--resume {out_dir}, choose another --out or pass --force to overwrite it")
    barrier("pderl-jax: sweep folder checked")
    if is_writer() and not resume:
        for name in previous:
            shutil.rmtree(out_dir / name)
        prepare_out_dir(out_dir, record, files=SWEEP_FILES, record_file=SWEEP_FILE)
        for run in runs:
            run_dir = out_dir / f"run_{run.index:03d}"
            run_dir.mkdir()
            (run_dir / "config.json").write_text(json.dumps(
                {**to_dict(run.config), "environment": environment_record(env), "sweep": run.values}, indent=2))
    barrier("pderl-jax: sweep folder ready")


def _checkpoint_run(states, index: int, run_dir: Path, options: CheckpointOptions, wall_s: float) -> None:
    """Run `index`'s state, taken out of the stacked states, as a checkpoint of its own folder."""
    state = jax.jit(lambda s: jax.tree.map(lambda x: x[index], s), out_shardings=replicated_sharding())(states)
    Checkpointer(run_dir, options).save(state, {"wall_s": wall_s, "frames": int(state.frames),
                                                "generations_per_call": 1})


def _run_summary(run: Run, rows: list[dict]) -> dict:
    tests = [r["champion_test"] for r in rows if not math.isnan(r["champion_test"])]
    return {"run": run.index, "seed": run.seed, **run.values, "generations": rows[-1]["generation"],
            "frames": rows[-1]["frames"], "final_champion_test": rows[-1]["champion_test"],
            "best_champion_test": max(tests) if tests else float("nan"), "final_rl_test": rows[-1]["rl_test"]}


def format_table(summaries: list[dict]) -> str:
    columns = list(summaries[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in summaries:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in s.values()) + " |")
    return "\n".join(lines)
