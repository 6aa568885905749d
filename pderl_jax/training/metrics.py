"""A run's metrics: one `metrics.csv` row per generation (or evaluation), the same columns for every writer
(`train`, `sweep`, the PPO baseline) and every reader (resume, `compare`, the plots)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from pderl_jax.config import ConfigError

if TYPE_CHECKING:
    from pderl_jax.training.generation import GenerationMetrics

METRICS_FILE = "metrics.csv"
CSV_COLUMNS = ["generation", "frames", "wall_s", "best_fitness", "pop_mean", "pop_min", "pop_max",
               "champion_test", "rl_test", "critic_loss", "actor_loss", "elite_rate", "selected_rate",
               "discarded_rate", "synced", "training_return"]
INT_COLUMNS = ("generation", "frames", "synced")
RATE_COLUMNS = ("elite_rate", "selected_rate", "discarded_rate")
POPULATION_COLUMNS = ("pop_mean", "pop_min", "pop_max")
# training_return: mean return of the last TRAINING_EPISODES finished training episodes (stochastic actions,
# the policy of the moment), the measure Baselines (`eprewmean`) and CleanRL publish for PPO; NaN for runs
# that do not measure it (every run but PPO, whose returns are the champion test's)
TRAINING_EPISODES = 100


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
            "discarded_rate": float(m.discarded_rate[i]), "synced": int(m.synced[i]), "training_return": math.nan,
        })
    return rows


def blank_row(**values) -> dict:
    """A row with every column NaN except `values` (for writers that measure only some columns)."""
    return {**{c: math.nan for c in CSV_COLUMNS}, **values}


def read_metrics(path: Path, up_to_generation: int | None = None) -> list[dict]:
    """The rows of a `metrics.csv` (numbers parsed), optionally only up to a generation; [] if absent."""
    if not Path(path).exists():
        return []
    with open(path) as f:
        rows = [{k: (int(v) if k in INT_COLUMNS else float(v or "nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]
    return [r for r in rows if up_to_generation is None or r["generation"] <= up_to_generation]


def read_metric_columns(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A metrics.csv as float64 columns; every CSV_COLUMNS entry is present (NaN where missing).

    Empty cells and cells of a truncated last line (a run still writing) read as NaN.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            lines = [row for row in reader if row]
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the metrics ({e.strerror})") from None
    columns = list(dict.fromkeys([*header, *CSV_COLUMNS]))
    data = np.full((len(lines), len(columns)), np.nan)
    for i, row in enumerate(lines):
        for j, cell in enumerate(row[: len(header)]):
            cell = cell.strip()
            if cell:
                try:
                    data[i, j] = float(cell)
                except ValueError:
                    raise ConfigError(f"{path}, line {i + 2}, column {header[j]!r}: {cell!r} is not a number") from None
    return {name: data[:, j].copy() for j, name in enumerate(columns)}


class MetricsLog:
    """Writes `run_dir/metrics.csv`, starting with `rows` (so that a resumed run drops the rows past its
    checkpoint), and with `tensorboard` every column to `run_dir/tensorboard` as well. A context manager.
    With `write` False (the processes other than 0 of a multi-process run) it only keeps the rows."""

    def __init__(self, run_dir: Path, rows: list[dict] = (), tensorboard: bool = False, write: bool = True):
        self.run_dir, self.rows, self.tensorboard, self.writes = Path(run_dir), list(rows), tensorboard, write
        self._file = self._writer = self._board = None

    def __enter__(self):
        if not self.writes:
            return self
        path = self.run_dir / METRICS_FILE
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="nan")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, restval="nan")
        self._board = None
        if self.tensorboard:
            from tensorboardX import SummaryWriter

            self._board = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self

    def write(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if self._writer is None:
            return
        self._writer.writerows(rows)
        self._file.flush()
        if self._board is not None:
            for row in rows:
                for name, value in row.items():
                    if name not in ("generation", "frames") and math.isfinite(value):
                        self._board.add_scalar(name, value, global_step=row["frames"])
            self._board.flush()

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()
        if self._board is not None:
            self._board.close()
        return False


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """A whole `metrics.csv` at once."""
    with MetricsLog(run_dir, rows):
        pass


__all__ = ["METRICS_FILE", "CSV_COLUMNS", "TRAINING_EPISODES", "INT_COLUMNS", "RATE_COLUMNS", "POPULATION_COLUMNS", "metric_rows",
           "blank_row", "read_metrics", "read_metric_columns", "MetricsLog", "write_metrics"]
