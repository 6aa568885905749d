"""The paper's comparison (Table 1, Figure 4): several methods over the same seeds on one task.

Evolutionary methods (pderl, perl, derl, erl) and the learners alone (td3, ddpg) run all their
seeds as one vmapped program on a JAX backend (MJX or brax: `train_sweep`), or one `train` run per
seed on the native MuJoCo backend. PPO is brax.training's agent (`experiments/ppo.py`), on MJX or
brax. Every run writes the
same `metrics.csv` columns; the final champion test of each seed goes into the table.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from pderl_jax.analysis import run_hooks
from pderl_jax.analysis.curves import backend_label, find_runs, interpolate_curves
from pderl_jax.config import (EVOLUTIONARY_MODES, LEARNER_MODES, Config, ConfigError, load_config,
                              with_overrides)
from pderl_jax.envs.rollout import Environment
from pderl_jax.presets import PPO_DEFAULT_PRESET, PPO_EARLIER_PRESET, default_preset, recorded_preset, with_preset
from pderl_jax.experiments.paper import PAPER_FRAMES, TABLE1, side_by_side
from pderl_jax.experiments.ppo import train_ppo
from pderl_jax.experiments.ppo_presets import DEFAULT_PPO_PRESET, get_ppo_preset
from pderl_jax.training.checkpoint import has_checkpoints
from pderl_jax.training.driver import RunOptions
from pderl_jax.training.loop import train
from pderl_jax.training.metrics import METRICS_FILE, read_metrics
from pderl_jax.training.run_folder import check_out_dir, claim_out_dir, environment_record, prepare_out_dir
from pderl_jax.training.distributed import barrier, check_agreement, is_writer
from pderl_jax.training.sweep import expand_runs, train_sweep

METHODS = (*EVOLUTIONARY_MODES, *LEARNER_MODES, "ppo")
COMPARE_FILES = ("config.json", "table.md", "table.csv", "figure4.png", "summary.json", *METHODS)


def final_statistics(values) -> dict:
    """Mean, standard deviation (over seeds, ddof 0 as NumPy's default), median and count."""
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values)),
            "n": int(values.size)}


def parse_methods(text: str) -> list[str]:
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {text!r} names a method twice")
    return methods


def method_config(task: str, method: str, frames: int, overrides: dict, preset: str | None = None) -> Config:
    """The task's Table 4 config for one method: its preset (`preset`, else `overrides["preset"]`, else
    the method's default: official, or td3-2018 for td3) and learner (ddpg beside the population, as
    the official code)."""
    overrides = dict(overrides)
    chosen = {name: overrides.pop(name) for name in ("preset", "learner.algorithm") if name in overrides}
    if preset is not None:
        chosen["preset"] = preset
    return with_overrides(load_config(task, {"mode": method, "frames": frames, **chosen}), overrides)


def device_description() -> str:
    """The accelerator or CPU the comparison ran on, for the wall-clock column."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{len(jax.devices())} x {device.device_kind}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name} ({os.cpu_count()} cores)"


def run_method(method: str, task: str, env: Environment, seeds: list[int], frames: int, out_dir: Path,
               overrides: dict, progress: bool, print_fn, resume: bool = False,
               preset: str | None = None) -> tuple[list[Path], bool]:
    """Every seed of one method into `out_dir/run_<i>/`; returns the run folders and whether it was
    stopped (Ctrl-C) before the end. With `resume`, finished runs are kept and stopped ones continue
    from their checkpoints (PPO, which has none, starts again)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = [out_dir / f"run_{i:03d}" for i in range(len(seeds))]
    if method == "ppo":
        for seed, folder in zip(seeds, folders):
            if not (resume and (folder / "summary.json").exists()):
                train_ppo(env, seed, frames, folder, preset=preset or DEFAULT_PPO_PRESET, print_fn=print_fn)
        return folders, False
    config = method_config(task, method, frames, overrides, preset)
    options = RunOptions(progress=progress)
    if env.batched:  # native MuJoCo: host callbacks cannot be vmapped
        for seed, folder in zip(seeds, folders):
            if resume and finished_run(folder / "summary.json"):
                continue
            again = resume and has_checkpoints(folder)
            summary = train(config.replace(seed=seed), env, folder, options, hooks=run_hooks(), resume=again,
                            force=not again, print_fn=print_fn)
            if summary["interrupted"]:
                return folders, True
        return folders, False
    if resume and (out_dir / "runs.csv").exists():
        return folders, False
    again = resume and has_checkpoints(out_dir)
    summaries = train_sweep(config, expand_runs(config, seeds, {}), env, out_dir, options, resume=again,
                            force=resume and not again, print_fn=print_fn)
    return folders, summaries[0]["interrupted"]


def finished_run(summary_file: Path) -> bool:
    """Whether a run's summary says it reached its end (not stopped with Ctrl-C)."""
    return summary_file.exists() and not json.loads(summary_file.read_text()).get("interrupted", False)


def final_rows(folders: list[Path]) -> list[dict]:
    """The last metrics row of each run."""
    rows = []
    for folder in folders:
        run_rows = read_metrics(folder / METRICS_FILE)
        if not run_rows:
            raise ConfigError(f"{folder}/metrics.csv has no rows")
        rows.append(run_rows[-1])
    return rows


def final_tests(folders: list[Path]) -> list[float]:
    """The last row's champion test of each run."""
    return [row["champion_test"] for row in final_rows(folders)]


def training_statistics(last_rows: list[dict]) -> dict:
    """For runs that measure it (PPO), the final training-episode return's mean, std, median and values
    (the sources' measure: the last 100 finished training episodes), from each run's last row; {} otherwise."""
    finals = [row.get("training_return", math.nan) for row in last_rows]
    if not all(math.isfinite(v) for v in finals):
        return {}
    return {"training": {**final_statistics(finals), "finals": finals}}


def compare(task: str, env: Environment, methods: list[str], seeds: list[int], frames: int, out_dir: Path,
            overrides: dict | None = None, force: bool = False, progress: bool = True, print_fn=print,
            resume: bool = False, presets: dict[str, str] | None = None, ppo_preset: str | None = None) -> dict:
    """Run every method over `seeds`, then write the table (MD + CSV), Figure 4 and `summary.json`.

    Ctrl-C stops the method running (checkpointed) and returns {"interrupted": True}; `resume`
    continues a comparison recorded in `out_dir/config.json` (`read_comparison`) where it stopped,
    each method on its recorded learner preset (`presets`). PPO runs on `ppo_preset` (default cleanrl).
    """
    overrides = dict(overrides or {})
    if "ppo" in methods and env.batched:
        raise ConfigError("PPO comes from brax.training and needs JAX physics; drop ppo from --methods or use "
                          "--backend mjx or brax")
    if frames <= 0:
        raise ConfigError(f"--frames must be positive, got {frames}")
    recorded = presets or {}
    presets = {method: method_config(task, method, frames, overrides, recorded.get(method)).preset
               for method in methods if method != "ppo"}  # every setting checked before anything runs
    if "ppo" in methods:
        presets["ppo"] = get_ppo_preset(recorded.get("ppo") or ppo_preset or DEFAULT_PPO_PRESET).name
    if "ppo" in methods and jax.process_count() > 1:
        raise ConfigError("PPO (brax.training) runs in one process; drop ppo from --methods, or compare it in a "
                          "separate one-process run and join the two with --merge")
    out_dir = Path(out_dir)
    record = comparison_record(task, env, methods, seeds, frames, overrides, presets)
    check_agreement({**record, "out": str(out_dir.absolute()), "force": force, "resume": resume},
                    "comparison settings")
    if not resume:
        check_out_dir(out_dir, record, force, files=COMPARE_FILES)
    barrier("pderl-jax: comparison folder checked")
    if is_writer() and not resume:
        prepare_out_dir(out_dir, record, files=COMPARE_FILES)
    barrier("pderl-jax: comparison folder ready")
    device = device_description()
    results = {}
    for method in methods:
        print_fn(f"compare: {method} on {task}, seeds {seeds}, {frames} frames")
        start = time.perf_counter()
        folders, stopped = run_method(method, task, env, seeds, frames, out_dir / method, overrides, progress,
                                      print_fn, resume, presets.get(method))
        if stopped:
            print_fn(f"compare: stopped during {method}; continue with pderl-jax compare --resume {out_dir}")
            return {"interrupted": True}
        barrier(f"pderl-jax: {method} written")  # process 0's files, read next by every process
        wall, compile_s = method_timing(out_dir / method, folders, time.perf_counter() - start)
        last_rows = final_rows(folders)
        finals = [row["champion_test"] for row in last_rows]
        results[method] = {**final_statistics(finals), "finals": finals, "wall_s": wall, "compile_s": compile_s,
                           "device": device, "runs": [str(f.relative_to(out_dir)) for f in folders],
                           **({"preset": presets[method]} if method in presets else {}),
                           **training_statistics(last_rows)}
        print_fn(f"compare: {method} final champion test {results[method]['mean']:.1f} +- "
                 f"{results[method]['std']:.1f} over {len(seeds)} seeds ({results[method]['wall_s']:.0f} s)")
    summary = {"task": task, "frames": frames, "seeds": seeds, "device": device,
               "environment": record["environment"], "methods": results}
    return write_report(summary, out_dir, print_fn)


def method_timing(method_dir: Path, folders: list[Path], measured_s: float) -> tuple[float, float | None]:
    """(wall-clock, compile) seconds of a method, over all the sessions of a resumed comparison: the
    sweep's summary (its wall time continues across resumes), else the sum over its runs' summaries
    (one run after another), else what this process measured."""
    files = [method_dir / "summary.json"] if (method_dir / "summary.json").exists() else [
        f / "summary.json" for f in folders]
    if not all(f.exists() for f in files):
        return round(measured_s, 1), None
    summaries = [json.loads(f.read_text()) for f in files]
    compile_s = sum(s["compile_s"] for s in summaries) if all("compile_s" in s for s in summaries) else None
    return round(sum(s["wall_s"] for s in summaries), 1), compile_s


def comparison_record(task: str, env: Environment, methods: list[str], seeds: list[int], frames: int,
                      overrides: dict, presets: dict[str, str]) -> dict:
    """A comparison's `config.json`: what `--resume` needs to continue it, and each method's learner preset."""
    return {"task": task, "methods": methods, "seeds": seeds, "frames": frames, "overrides": overrides,
            "presets": presets, "environment": {**environment_record(env), "name": env.task}}


def read_comparison(out_dir: Path) -> dict:
    """The recorded settings of a comparison folder (`comparison_record`), for `compare --resume`."""
    path = Path(out_dir) / "config.json"
    try:
        record = json.loads(path.read_text())
        missing = [k for k in ("task", "methods", "seeds", "frames", "overrides", "environment") if k not in record]
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the comparison's settings ({error}); --resume takes a folder "
                          "written by pderl-jax compare") from None
    if missing:
        raise ConfigError(f"{path} is not a comparison's config.json (no {', '.join(missing)})")
    if "presets" not in record:  # written before learner presets (0.7.0): what its runs recorded, else official
        record["presets"] = {method: _recorded_preset(Path(out_dir) / method) for method in record["methods"]
                             if method != "ppo"}
    if "ppo" in record["methods"] and "ppo" not in record["presets"]:  # before PPO presets (0.8)
        record["presets"]["ppo"] = PPO_EARLIER_PRESET
    ran = (Path(out_dir) / "ppo" / "run_000" / "config.json").exists()
    if record["presets"].get("ppo") == PPO_DEFAULT_PRESET and ran:  # cleanrl runs before its CleanRL loss
        record["presets"]["ppo"] = _recorded_preset(Path(out_dir) / "ppo")
    return record


def _recorded_preset(method_dir: Path) -> str:
    """The learner preset of a method's first run folder (official where none is recorded)."""
    path = method_dir / "run_000" / "config.json"
    try:
        return recorded_preset(json.loads(path.read_text()))
    except (OSError, ValueError):
        return recorded_preset({})


def write_report(summary: dict, out_dir: Path, print_fn=print) -> dict:
    """`summary.json`, the table (MD + CSV) and Figure 4 of a comparison whose runs are in `out_dir`
    (by process 0 alone, where several run it)."""
    if not is_writer():
        return summary
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    write_table(summary, out_dir)
    plot_figure4(out_dir, list(summary["methods"]), out_dir / "figure4.png",
                 title=f"{summary['task']}, {len(summary['seeds'])} seeds, {summary['frames']} frames")
    print_fn(format_table(summary))
    return summary


def merge(comparisons: list[Path], out_dir: Path, force: bool = False, print_fn=print) -> dict:
    """One comparison from several (e.g. methods run as separate jobs or on separate machines).

    They must agree on task, frames, seeds and environment; a method may appear only once.
    """
    summaries = []
    for folder in comparisons:
        path = Path(folder) / "summary.json"
        if not path.exists():
            raise ConfigError(f"{path} not found: pass folders written by pderl-jax compare")
        summaries.append((Path(folder), json.loads(path.read_text())))
    first = summaries[0][1]
    for folder, summary in summaries[1:]:
        for key in ("task", "frames", "seeds", "environment"):
            if summary[key] != first[key]:
                raise ConfigError(f"{folder} differs in {key} ({summary[key]} vs {first[key]}); only comparisons "
                                  "of the same task, frames, seeds and environment can be merged")
    methods = [m for _, s in summaries for m in s["methods"]]
    if len(set(methods)) != len(methods):
        raise ConfigError(f"a method appears in several of the folders ({', '.join(methods)})")
    out_dir = Path(out_dir)
    claim_out_dir(out_dir, {"merged": [str(f) for f, _ in summaries]}, force, files=COMPARE_FILES)
    results = {}
    for folder, summary in summaries:
        for method, result in summary["methods"].items():
            shutil.copytree(folder / method, out_dir / method)
            results[method] = {**result, "device": result.get("device", summary["device"])}
    devices = sorted({r["device"] for r in results.values()})
    merged = {**{k: first[k] for k in ("task", "frames", "seeds", "environment")}, "device": " / ".join(devices),
              "methods": {m: results[m] for m in METHODS if m in results}}
    return write_report(merged, out_dir, print_fn)


def method_name(method: str, result: dict) -> str:
    """"PDERL", or "PDERL @ td3-2018" for a method on a learner preset other than its default."""
    earlier = PPO_EARLIER_PRESET if method == "ppo" else default_preset(method)  # summaries before presets
    return with_preset(method.upper(), method, result.get("preset", earlier))


def format_table(summary: dict) -> str:
    """Table 1 layout: one column per method; mean, std and median of the final champion test, wall-clock."""
    results = summary["methods"]

    def row(name: str, cells) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [row("metric", [method_name(m, r) for m, r in results.items()]), "|---|" + "---|" * len(results)]
    for key, name in (("mean", "mean"), ("std", "std"), ("median", "median"), ("wall_s", "wall-clock (s)")):
        lines.append(row(name, [f"{r[key]:.0f}" for r in results.values()]))
    if any("training" in r for r in results.values()):
        lines.append(row("training episodes, mean (last 100)",
                         [f"{r['training']['mean']:.0f}" if "training" in r else "-" for r in results.values()]))
        lines.append(row("training episodes, std",
                         [f"{r['training']['std']:.0f}" if "training" in r else "-" for r in results.values()]))
    if any(r.get("compile_s") for r in results.values()):
        lines.append(row("of which compile (s)",
                         [f"{r['compile_s']:.0f}" if r.get("compile_s") else "-" for r in results.values()]))
    return "\n".join(lines)


def write_table(summary: dict, out_dir: Path) -> None:
    env = summary["environment"]
    header = (f"Final champion test return, {summary['task']} ({backend_label(env)}, episodes of "
              f"{env['episode_length']} steps), {summary['frames']} frames, seeds {summary['seeds']}; "
              f"wall-clock on {summary['device']}.\n\n")
    paper = ""
    if summary["task"] in TABLE1:
        paper = (f"\nNext to the paper's Table 1 (gym {summary['task']} v2 on MuJoCo 2.0, five seeds, "
                 f"{PAPER_FRAMES[summary['task']]:,} frames; this run: {summary['frames']:,} frames):\n\n"
                 + side_by_side(summary) + "\n")
    (out_dir / "table.md").write_text(header + format_table(summary) + "\n" + paper)
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "mean", "std", "median", "n", "wall_s", "device", "finals", "training_finals"])
        for method, r in summary["methods"].items():
            writer.writerow([method, r["mean"], r["std"], r["median"], r["n"], r["wall_s"], summary["device"],
                             " ".join(f"{v:.3f}" for v in r["finals"]),
                             " ".join(f"{v:.3f}" for v in r.get("training", {}).get("finals", []))])


def plot_figure4(out_dir: Path, methods: list[str], path: Path, title: str = "") -> Path:
    """Mean +- std of the champion test return against frames, one line per method (Figure 4 style)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for method in methods:
        runs = find_runs([out_dir / method])
        top = max(float(np.nanmax(r.metrics["frames"])) for r in runs)
        grid = np.linspace(0, top, 100)
        curves = interpolate_curves([r.metrics["frames"] for r in runs], [r.metrics["champion_test"] for r in runs],
                                    grid)
        with warnings.catch_warnings():  # grid points no run has reached yet are NaN, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        preset = recorded_preset(runs[0].config)
        line, = axes.plot(grid, mean, label=method_name(method, {"preset": preset}))
        axes.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("frames")
    axes.set_ylabel("champion test return")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
