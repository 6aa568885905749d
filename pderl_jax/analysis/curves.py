"""Learning curves across runs and seeds: mean with a 95% Student-t band, as PNGs and `curves.json`.

`find_runs` collects runs and labels their groups (task, mode, learner, swept values); `plot_runs`
puts each group on a common grid of frames and of wall-clock seconds; `plot_single_run` is the
one-run figure a training run writes at its end. Figures are `matplotlib.figure.Figure`s on the
Agg canvas: no display and no pyplot state needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pderl_jax.config import EVOLUTIONARY_MODES, RECORDED_BACKENDS, ConfigError
from pderl_jax.presets import recorded_preset, with_preset
from pderl_jax.training.metrics import METRICS_FILE, POPULATION_COLUMNS, RATE_COLUMNS, read_metric_columns

# What curves.json holds, per x axis.
QUANTITIES = {
    "frames": ("champion_test", "rl_test", *POPULATION_COLUMNS, *RATE_COLUMNS),
    "wall_s": ("champion_test", "rl_test"),
}
GRID_POINTS = 200
CONFIDENCE = 0.95


@dataclasses.dataclass(eq=False)
class RunRecord:
    """One training run: its folder, group label, seed, config.json and metrics.csv columns."""

    path: Path
    label: str
    seed: int | None
    config: dict
    metrics: dict[str, np.ndarray]  # every CSV_COLUMNS entry (and any other column), float64

    @property
    def task(self) -> str:
        return str(self.config.get("task", "?"))

    @property
    def mode(self) -> str:
        return str(self.config.get("mode", "?"))

    @property
    def rows(self) -> int:
        return len(self.metrics["frames"])

    @property
    def has_population(self) -> bool:
        """An evolutionary mode that logged a finite population fitness."""
        return self.mode in EVOLUTIONARY_MODES and bool(np.isfinite(self.metrics["pop_mean"]).any())

    @property
    def has_selection_rates(self) -> bool:
        return self.mode in EVOLUTIONARY_MODES and bool(np.isfinite(self.metrics["elite_rate"]).any())


# ----------------------------------------------------------------------------------- finding runs


def find_runs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[RunRecord]:
    """The runs under `paths`: run folders (metrics.csv + config.json), sweep folders (their run_<i>/)
    or folders of either; each run once, labelled over the whole set. ConfigError for a path without runs."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no run folders given")
    run_dirs: dict[Path, Path] = {}  # resolved -> as first reached
    for path in paths:
        for run_dir in _run_dirs(path):
            run_dirs.setdefault(run_dir.resolve(), run_dir)
    records = [_record(d) for d in run_dirs.values()]
    _assign_labels(records)
    return records


def _record(run_dir: Path) -> RunRecord:
    config = _read_config(run_dir / "config.json")
    seed = config.get("seed")
    return RunRecord(path=run_dir, label="", seed=int(seed) if isinstance(seed, (int, float)) else None,
                     config=config, metrics=read_metric_columns(run_dir / METRICS_FILE))


def _is_run(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() and (path / "config.json").is_file()


def _children(path: Path) -> list[Path]:
    def natural(p: Path):
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]

    try:
        return sorted((p for p in path.iterdir() if p.is_dir()), key=natural)
    except OSError as e:
        raise ConfigError(f"{path}: cannot list the folder ({e.strerror})") from None


def _run_dirs(path: Path) -> list[Path]:
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_file():
        if path.name in (METRICS_FILE, "config.json", "summary.json"):
            path = path.parent  # a file of a run folder stands for the folder
        else:
            raise ConfigError(f"{path}: expected a run folder (metrics.csv + config.json), a sweep folder or a "
                              f"folder of runs, got a file")
    if _is_run(path):
        return [path]
    if (path / METRICS_FILE).is_file():
        raise ConfigError(f"{path}: has metrics.csv but no config.json, so the run cannot be labelled")
    found = []
    for child in _children(path):
        if _is_run(child):
            found.append(child)
        else:  # a sweep folder one level down: its run_<i>/
            found.extend(g for g in _children(child) if g.name.startswith("run_") and _is_run(g))
    if not found:
        raise ConfigError(f"{path}: no training runs found (looked for metrics.csv + config.json in the folder, "
                          f"in its subfolders and in their run_<i>/ folders)")
    return found


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _sweep_label(values: dict) -> str:
    short = [name.rsplit(".", 1)[-1] for name in values]
    names = [s if short.count(s) == 1 else name for s, name in zip(short, values)]
    return " ".join(f"{n}={v:g}" if isinstance(v, (int, float)) else f"{n}={v}" for n, v in zip(names, values.values()))


def backend_label(environment: dict) -> str:
    """"mjx", "native" or "brax spring" (brax with its physics) from a run's environment record (of any
    version: earlier ones name native "gymnasium")."""
    names = {**environment, "backend": RECORDED_BACKENDS.get(environment.get("backend"), environment.get("backend"))}
    return " ".join(str(names[key]) for key in ("backend", "physics") if names.get(key) is not None)


def _group_parts(record: RunRecord) -> dict:
    config = record.config
    learner = config.get("learner", {}).get("algorithm") if isinstance(config.get("learner"), dict) else None
    environment = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    sweep = config.get("sweep") if isinstance(config.get("sweep"), dict) else {}
    return {"task": record.task, "backend": backend_label(environment), "mode": record.mode,
            "learner": learner, "preset": recorded_preset(config), "sweep": sweep}


def _assign_labels(records: list[RunRecord]) -> None:
    """Group label = mode, with the task (backend, learner) added when the runs span several, the
    learner preset when it is not the mode's default, and the swept values of sweep runs: "pderl",
    "hopper td3", "td3 @ official", "pderl (td3 learner) actor_lr=0.0001"."""
    parts = [_group_parts(r) for r in records]
    several = lambda key, which=parts: len({repr(p[key]) for p in which}) > 1
    tasks, backends = several("task"), several("backend")
    learners = several("learner", [p for p in parts if p["mode"] in EVOLUTIONARY_MODES])
    for record, p in zip(records, parts):
        words = [p["task"]] if tasks else []
        if backends:
            words.append(f"[{p['backend']}]")
        words.append(p["mode"])
        if learners and p["mode"] in EVOLUTIONARY_MODES:
            words.append(f"({p['learner']} learner)")
        words[-1] = with_preset(words[-1], p["mode"], p["preset"])
        if p["sweep"]:
            words.append(_sweep_label(p["sweep"]))
        record.label = " ".join(words)


def group_runs(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """label -> its runs, labels in order of first appearance."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.label, []).append(record)
    return groups


# ------------------------------------------------------------------------------------- statistics


def confidence_band(curves, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean across runs and a two-sided Student-t interval of the mean, per point.

    `curves` is [runs, points] (a 1-D array is one run). NaNs are ignored per point: with n finite
    values the interval is mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n) (s with ddof 1); with
    fewer than 2 the interval is the mean itself, and with none all three are NaN. float64.
    """
    from scipy.stats import t

    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 1:
        curves = curves[None]
    if curves.ndim != 2:
        raise ValueError(f"curves must be [runs, points], got shape {curves.shape}")
    finite = np.isfinite(curves)
    n = finite.sum(axis=0)
    values = np.where(finite, curves, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, values.sum(axis=0) / n, np.nan)
        squares = np.where(finite, (curves - mean) ** 2, 0.0).sum(axis=0)
        sem = np.sqrt(squares / (n - 1) / n)
        half = t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * sem
    half = np.where(n >= 2, half, 0.0)
    return mean, mean - half, mean + half


def interpolate_curves(x_list: Sequence, y_list: Sequence, grid) -> np.ndarray:
    """Runs logged at different x (frames, seconds) on a common grid, as step functions: [runs, points].

    At each grid point a run's value is that of its last row with x at or before the point (so
    after its last row it keeps its last value), NaN before its first row. Rows with a NaN x are
    dropped; rows are taken in x order (stable, so of equal x the later row wins).
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"grid must be 1-D, got shape {grid.shape}")
    if len(x_list) != len(y_list):
        raise ValueError(f"{len(x_list)} x arrays but {len(y_list)} y arrays")
    out = np.full((len(x_list), len(grid)), np.nan)
    for i, (x, y) in enumerate(zip(x_list, y_list)):
        x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"run {i}: x has {x.size} values but y has {y.size}")
        keep = ~np.isnan(x)
        x, y = x[keep], y[keep]
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        index = np.searchsorted(x, grid, side="right") - 1
        out[i] = np.where(index >= 0, y[np.maximum(index, 0)] if len(y) else np.nan, np.nan)
    return out


def _grid(records: Sequence[RunRecord], column: str) -> np.ndarray:
    x = np.concatenate([r.metrics[column] for r in records])
    x = x[np.isfinite(x)]
    if not len(x):
        return np.zeros(0)
    lo, hi = x.min(), x.max()
    return np.array([lo]) if hi <= lo else np.linspace(lo, hi, GRID_POINTS)


def group_curves(records: Sequence[RunRecord], x_column: str, y_column: str, grid) -> dict[str, np.ndarray]:
    """The runs' `y_column` on `grid` (over `x_column`): {"values" [runs, points], "mean", "low", "high", "n"}.

    Grid points past the group's last logged x (its longest run) are NaN: the group has no data
    there. Inside that span a run that ended earlier keeps its last value (see `interpolate_curves`).
    """
    grid = np.asarray(grid, np.float64)
    values = interpolate_curves([r.metrics[x_column] for r in records], [r.metrics[y_column] for r in records], grid)
    lasts = [np.nanmax(r.metrics[x_column]) for r in records if np.isfinite(r.metrics[x_column]).any()]
    if lasts:
        values[:, grid > max(lasts)] = np.nan
    mean, low, high = confidence_band(values)
    return {"values": values, "mean": mean, "low": low, "high": high, "n": np.isfinite(values).sum(axis=0)}


# ---------------------------------------------------------------------------------------- figures


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes.ravel()


def save_figure(fig, path: Path) -> Path:
    from matplotlib.ticker import EngFormatter

    for ax in fig.axes:
        if ax.get_xlabel() == "frames":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 1.5M, not 1500000
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _band(ax, x, curve: dict, colour, label: str | None, runs: int, linestyle: str = "-", band: bool = True):
    marker = "o" if np.isfinite(curve["mean"]).sum() == 1 else None
    ax.plot(x, curve["mean"], color=colour, linestyle=linestyle, drawstyle="steps-post", label=label, marker=marker,
            markersize=3)
    if band and runs >= 2:
        ax.fill_between(x, curve["low"], curve["high"], color=colour, alpha=0.2, step="post", linewidth=0)


def _runs(runs: Sequence) -> str:
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}"


def _json_floats(values) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, np.float64)]


@dataclasses.dataclass
class CurveSet:
    """Groups of runs with their curves on shared grids: what every figure of `plot_runs` draws."""

    groups: dict[str, list[RunRecord]]
    colours: dict[str, object]
    grids: dict[str, np.ndarray]  # axis -> grid
    stats: dict  # label -> axis -> quantity -> curves, for the quantities some run of the group logged

    @property
    def population_groups(self) -> list[str]:
        return [label for label, runs in self.groups.items() if any(r.has_population for r in runs)]


def curve_set(records: list[RunRecord]) -> CurveSet:
    groups = group_runs(records)
    grids = {axis: _grid(records, axis) for axis in QUANTITIES}
    stats = {label: {axis: {q: group_curves(runs, axis, q, grids[axis]) for q in quantities
                            if any(np.isfinite(r.metrics[q]).any() for r in runs)}
                     for axis, quantities in QUANTITIES.items()}
             for label, runs in groups.items()}
    return CurveSet(groups, dict(zip(groups, _colours(len(groups)))), grids, stats)


def plot_runs(paths, out_dir: str | os.PathLike) -> list[Path]:
    """Curves of every group of runs under `paths` (see `find_runs`) into `out_dir`; returns the files written.

    Writes `learning_curves.png` (champion test return vs frames and vs wall-clock seconds, mean and
    95% band per group, the RL actor's test dashed), `population_spread.png` (mean pop_min..pop_max
    band and pop_mean per group with a population), `selection_rates.png` (the RL actor's elite /
    selected / discarded rates per evolutionary group) and `curves.json` (the grids and, per group
    and quantity, mean / low / high / n; null where undefined). The last two PNGs are skipped when
    no group has a population; a stale copy from an earlier call is not removed.
    """
    records = [r for r in find_runs(paths) if r.rows > 0]
    if not records:
        raise ConfigError(f"{', '.join(str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths))}"
                          f": the runs found have no metrics rows yet")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = curve_set(records)
    written = [_plot_learning_curves(curves, out_dir / "learning_curves.png")]
    if curves.population_groups:
        written.append(_plot_population_spread(curves, out_dir / "population_spread.png"))
    rate_groups = [label for label, runs in curves.groups.items() if any(r.has_selection_rates for r in runs)]
    if rate_groups:
        written.append(_plot_selection_rates(curves, rate_groups, out_dir / "selection_rates.png"))
    json_path = out_dir / "curves.json"
    json_path.write_text(json.dumps(_curves_summary(curves, written), indent=1))
    return [*written, json_path]


def _plot_learning_curves(c: CurveSet, path: Path) -> Path:
    """Champion test return (solid, band) and the RL actor's (dashed) vs frames and vs seconds."""
    fig, axes = new_figure(12, 4.4, ncols=2)
    for ax, axis, xlabel in zip(axes, ("frames", "wall_s"), ("frames", "wall-clock seconds")):
        for label, runs in c.groups.items():
            curves = c.stats[label][axis]
            if "champion_test" in curves:
                _band(ax, c.grids[axis], curves["champion_test"], c.colours[label], f"{label} ({_runs(runs)})",
                      len(runs))
            if label in c.population_groups and "rl_test" in curves:  # learner-only: the RL actor is the champion
                _band(ax, c.grids[axis], curves["rl_test"], c.colours[label], None, len(runs), "--", band=False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test return")
        ax.grid(alpha=0.3)
    if c.population_groups:
        axes[0].plot([], [], color="grey", linestyle="--", label="RL actor (dashed)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("champion test return (mean, 95% band of the mean)")
    axes[1].set_title("against wall-clock time")
    return save_figure(fig, path)


def _plot_population_spread(c: CurveSet, path: Path) -> Path:
    """Per group with a population: the mean pop_min..pop_max band, pop_mean and the champion."""
    labels = c.population_groups
    ncols = min(3, len(labels))
    nrows = math.ceil(len(labels) / ncols)
    fig, axes = new_figure(4.6 * ncols, 3.6 * nrows, ncols=ncols, nrows=nrows, sharey=True)
    for ax, label in zip(axes, labels):
        curves, colour, x, n = c.stats[label]["frames"], c.colours[label], c.grids["frames"], len(c.groups[label])
        if "pop_min" in curves and "pop_max" in curves:
            ax.fill_between(x, curves["pop_min"]["mean"], curves["pop_max"]["mean"], color=colour, alpha=0.2,
                            step="post", linewidth=0, label="pop min..max")
        if "pop_mean" in curves:
            _band(ax, x, curves["pop_mean"], colour, "pop mean", n, band=False)
        if "champion_test" in curves:
            _band(ax, x, curves["champion_test"], "black", "champion test", n, ":", band=False)
        ax.set_title(f"{label} ({_runs(c.groups[label])})", fontsize=9)
        ax.set_xlabel("frames")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    axes[0].set_ylabel("fitness (mean over runs)")
    fig.suptitle("Population fitness spread")
    return save_figure(fig, path)


def _plot_selection_rates(c: CurveSet, labels: list[str], path: Path) -> Path:
    """The synced RL actor's elite / selected / discarded shares per evolutionary group (Figure 11)."""
    fig, axes = new_figure(13, 3.8, ncols=3, sharey=True)
    for ax, column in zip(axes, RATE_COLUMNS):
        for label in labels:
            if column in c.stats[label]["frames"]:
                _band(ax, c.grids["frames"], c.stats[label]["frames"][column], c.colours[label], label,
                      len(c.groups[label]))
        ax.set_title(column.replace("_", " ").replace("rate", "share"))
        ax.set_xlabel("frames")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of RL-actor syncs")
    axes[0].legend(fontsize=8)
    fig.suptitle("Selection of the synced RL actor (paper Figure 11), mean and 95% band")
    return save_figure(fig, path)


def _curves_summary(c: CurveSet, written: list[Path]) -> dict:
    """What `curves.json` holds: the grids and, per group and quantity, mean / low / high / n."""
    return {
        "confidence": CONFIDENCE,
        "grid": {axis: _json_floats(grid) for axis, grid in c.grids.items()},
        "groups": {
            label: {
                "runs": [str(r.path) for r in runs],
                "seeds": [r.seed for r in runs],
                **_group_parts(runs[0]),
                **{axis: {q: {k: (_json_floats(curve[k]) if k != "n" else curve[k].tolist())
                              for k in ("mean", "low", "high", "n")}
                          for q, curve in per_axis.items()}
                   for axis, per_axis in c.stats[label].items()},
            }
            for label, runs in c.groups.items()
        },
        "figures": [p.name for p in written],
    }


def plot_single_run(run_dir: str | os.PathLike) -> Path:
    """`run_dir/learning_curve.png`: champion and RL actor test return vs frames, population band if any.

    For the end of a training run: reads only metrics.csv (and config.json for the title, if
    readable); a run with zero or one row gives a (nearly empty) figure rather than an error.
    """
    run_dir = Path(run_dir)
    metrics = read_metric_columns(run_dir / METRICS_FILE)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        title = f"{config.get('task', '')} {config.get('mode', '')} seed {config.get('seed', '?')}".strip()
    except (OSError, ValueError, AttributeError):
        title = run_dir.name
    x = metrics["frames"]
    marker = "o" if len(x) <= 1 else None
    fig, (ax,) = new_figure(7, 4)
    population = np.isfinite(metrics["pop_mean"]).any()
    if np.isfinite(metrics["pop_min"]).any() and np.isfinite(metrics["pop_max"]).any():
        ax.fill_between(x, metrics["pop_min"], metrics["pop_max"], color="tab:blue", alpha=0.15, step="post",
                        linewidth=0, label="population min..max")
        if len(x) == 1:  # a band of one point is invisible: a vertical bar instead
            ax.vlines(x, metrics["pop_min"], metrics["pop_max"], color="tab:blue", alpha=0.3, linewidth=6)
    if population:
        ax.plot(x, metrics["pop_mean"], color="tab:blue", alpha=0.6, lw=0.8, drawstyle="steps-post",
                marker=marker, label="population mean")
    ax.plot(x, metrics["champion_test"], color="tab:red", drawstyle="steps-post", marker=marker,
            label="champion test" if population else "RL actor test")
    if population:
        ax.plot(x, metrics["rl_test"], color="tab:green", linestyle="--", drawstyle="steps-post", marker=marker,
                label="RL actor test")
    if not len(x):
        ax.text(0.5, 0.5, "no generations logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("frames")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(x):
        ax.legend(fontsize=8)
    return save_figure(fig, run_dir / "learning_curve.png")


__all__ = ["RunRecord", "confidence_band", "find_runs", "group_curves", "group_runs", "interpolate_curves",
           "plot_runs", "plot_single_run"]
