"""S independent runs (seeds x hyperparameter values) as one vmapped, compiled program.

Every run has the same structure (task, population size, network sizes, mode); what differs is
its seed and any float setting (learning rates, tau, gamma, sigmas, ...), which reach the
generation as traced leaves of a stacked `Config`. The run axis is sharded over the devices
when it divides evenly (over several processes it must: each computes its share, and the
metrics are gathered to all of them). Each run writes its own `run_<i>/metrics.csv` and
`config.json` (the same files as a single run), and `runs.csv` summarises them all; with
several processes, process 0 writes every file.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm import tqdm

from pderl_jax.config import SECTIONS, Config, ConfigError, override, to_dict, validate
from pderl_jax.envs.rollout import Environment
from pderl_jax.training.generation import Trainer
from pderl_jax.training.hostmem import release_freed_memory
from pderl_jax.training.metrics import MetricsLog, metric_rows
from pderl_jax.training.run_folder import environment_record
from pderl_jax.training.distributed import barrier, check_agreement, is_writer, stop_on_lost_process, to_host
from pderl_jax.training.sharding import leading_axis_sharding, place, placement


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


def parse_seeds(text: str) -> list[int]:
    """ "0..7" (inclusive range), "0,3,9" or "5"."""
    try:
        if ".." in text:
            first, last = (int(x) for x in text.split(".."))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: use a range like 0..7 or a list like 0,3,9") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} must name at least one seed, each once")
    return seeds


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
    runs = []
    names = list(grid)
    for combo in itertools.product(*(grid[n] for n in names)):
        for seed in seeds:
            config = base.replace(seed=seed)
            for name, value in zip(names, combo):
                config = override(config, name, value)
            validate(config)
            runs.append(Run(index=len(runs), seed=seed, values=dict(zip(names, combo)), config=config))
    return runs


def stack_hparams(runs: list[Run]) -> Config:
    """The runs' configs stacked leaf-wise ([S] floats); seeds live in the keys, not here."""
    seed = runs[0].config.seed
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]),
                        *[r.config.replace(seed=seed) for r in runs])


def initial_states(trainer: Trainer, runs: list[Run]):
    """The runs' initial states and stacked settings, their run axis sharded over the devices (each
    device builds only its runs); also the placement in words."""
    sharding = leading_axis_sharding(len(runs), "runs")
    init = jax.jit(lambda seeds: jax.vmap(trainer.init)(jax.vmap(jax.random.key)(seeds)), out_shardings=sharding)
    states = init(np.asarray([r.seed for r in runs], np.int32))
    hparams = place(jax.device_get(stack_hparams(runs)), sharding)
    return states, hparams, placement(sharding, len(runs))


def train_sweep(base: Config, runs: list[Run], env: Environment, out_dir: Path, generations_per_call: int = 1,
                progress: bool = True, print_fn: Callable[[str], None] = print, force: bool = False) -> list[dict]:
    """Train all runs together until each has used `base.frames` frames; returns one summary per run.

    Like a single run, each run stops at the first generation that takes it past the budget; its
    later generations (while other runs finish) are computed but not written. A folder holding an
    earlier sweep is refused unless `force`.
    """
    if getattr(env, "batched", False):
        raise ConfigError("sweeps vmap the environment, so they need a JAX backend (--backend mjx or brax; the "
                          "native MuJoCo backend steps on the host); run native seeds as separate pderl-jax train runs")
    out_dir = Path(out_dir)
    check_agreement({"config": to_dict(base), "runs": [dataclasses.asdict(r) for r in runs], "out": str(out_dir),
                     "environment": environment_record(env), "generations_per_call": generations_per_call,
                     "force": force}, "sweep settings")
    writer = is_writer()
    previous = sorted(p.name for p in out_dir.glob("run_[0-9][0-9][0-9]")) if out_dir.is_dir() else []
    if (previous or (out_dir / "runs.csv").exists()) and not force:
        raise ConfigError(f"{out_dir} already holds a sweep ({', '.join(previous[:3]) or 'runs.csv'}...); choose "
                          "another --out or pass --force to overwrite it")
    barrier("pderl-jax: sweep folder checked")
    if writer:
        for name in previous:
            shutil.rmtree(out_dir / name)
        out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(base, env)
    start = time.perf_counter()
    states, hparams, where = initial_states(trainer, runs)
    print_fn(f"sweep: {len(runs)} runs, {where}")

    def chunk(states, hparams):
        return lax.scan(lambda s, _: jax.vmap(trainer.generation)(s, hparams), states, None,
                        length=generations_per_call)

    step = jax.jit(chunk, donate_argnums=0).lower(states, hparams).compile()
    compile_s = time.perf_counter() - start
    release_freed_memory()
    print_fn(f"compiled in {compile_s:.1f} s")

    logs = []
    for run in runs:
        run_dir = out_dir / f"run_{run.index:03d}"
        if writer:
            run_dir.mkdir(exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(
                {**to_dict(run.config), "environment": environment_record(env), "sweep": run.values}, indent=2))
        logs.append(MetricsLog(run_dir, write=writer))
    rows = [log.rows for log in logs]
    done = np.zeros(len(runs), bool)
    bar = tqdm(total=base.frames * len(runs), unit="frame", disable=not (progress and writer), dynamic_ncols=True)
    with contextlib.ExitStack() as open_files, stop_on_lost_process():
        open_files.callback(bar.close)
        for log in logs:
            open_files.enter_context(log)
        generation = 0  # the runs advance together
        while not done.all():
            states, metrics = step(states, hparams)
            metrics = to_host(metrics)
            elapsed = time.perf_counter() - start
            for i in np.flatnonzero(~done):
                run_metrics = jax.tree.map(lambda x: x[:, i], metrics)
                for row in metric_rows(run_metrics, generation + 1, elapsed):  # up to the row past the budget
                    if done[i]:
                        break
                    before = rows[i][-1]["frames"] if rows[i] else 0
                    logs[i].write([row])
                    bar.update(min(row["frames"], base.frames) - min(before, base.frames))
                    done[i] = row["frames"] > base.frames
            generation += generations_per_call
            bar.set_postfix(done=f"{done.sum()}/{len(runs)}", fps=f"{sum(r[-1]['frames'] for r in rows) / elapsed:.0f}")
    wall = time.perf_counter() - start
    summaries = []
    for run, run_rows in zip(runs, rows):
        tests = [r["champion_test"] for r in run_rows if not math.isnan(r["champion_test"])]
        summaries.append({"run": run.index, "seed": run.seed, **run.values, "generations": run_rows[-1]["generation"],
                          "frames": run_rows[-1]["frames"], "final_champion_test": run_rows[-1]["champion_test"],
                          "best_champion_test": max(tests) if tests else float("nan"),
                          "final_rl_test": run_rows[-1]["rl_test"]})
    if writer:
        with open(out_dir / "runs.csv", "w", newline="") as f:
            writer_csv = csv.DictWriter(f, fieldnames=list(summaries[0]))
            writer_csv.writeheader()
            writer_csv.writerows(summaries)
        (out_dir / "summary.json").write_text(json.dumps(
            {"runs": len(runs), "processes": jax.process_count(), "wall_s": round(wall, 1),
             "compile_s": round(compile_s, 1),
             "frames_per_s": round(sum(s["frames"] for s in summaries) / wall, 1)}, indent=2))
    print_fn(format_table(summaries))
    print_fn(f"done: {len(runs)} runs in {wall:.1f} s (compile {compile_s:.1f} s); results in {out_dir}/run_*/ "
             f"and {out_dir}/runs.csv")
    return summaries


def format_table(summaries: list[dict]) -> str:
    columns = list(summaries[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in summaries:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in s.values()) + " |")
    return "\n".join(lines)
