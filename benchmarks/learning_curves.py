"""Learning curves of long comparisons beside published curves, and the RL actor's selection rates (Table 2).

usage: python benchmarks/learning_curves.py [ROOT] [--points 100000,200000,300000,1000000]

ROOT (default benchmarks/results/learning_curves) holds `pderl-jax compare` folders, one or more per
task (`Hopper-v5/` with pderl, erl and td3, `Hopper-v5-ddpg/` with ddpg, ...). A method run on a
learner preset other than its default (official; td3-2018 for td3) is its own entry, "pderl @
td3-2018", read from the runs' config.json (records without a preset are official). For every task and
method it reads each seed's champion test return (the best member's, or the learner's actor alone in
td3/ddpg; for the evolutionary methods also their DDPG actor's) at the given frame counts, as the
last row at or before each count, and writes:

- ROOT/summary.json: per task, method and count the per-seed values, mean, std (ddof 0, as the
  published spreads), n, and the interquartile mean with its 95% stratified bootstrap interval
  (rliable, 2,000 resamples); the final cumulative selection rates of the synced RL actor; the
  published points of benchmarks/published_curves.json beside them;
- ROOT/table.md: the same as tables, with Table 2 of the paper;
- ROOT/curves_<task>.png: mean +- std of each method against frames, the published points as markers;
- for every run with `pderl-jax analyze` output (RUN/analysis/analysis.json, the study of its final
  population), the paper's Figure 5 and 7 claims measured: how often each crossover's child keeps the
  better parent's return and how often it falls below 40% of it, the same for each mutation against
  its parent, the median child return relative to parent 1 (the paper's normalisation), and the
  fittest member's children at each mutation magnitude relative to it.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from pderl_jax.analysis.curves import backend_label, find_runs, interpolate_curves, new_figure, save_figure
from pderl_jax.config import EVOLUTIONARY_MODES
from pderl_jax.experiments.compare import METHODS, finished_run
from pderl_jax.experiments.paper import PAPER_FRAMES, TABLE1, TABLE2, TABLE2_OUTCOMES, paper_result
from pderl_jax.presets import recorded_preset, with_preset
from pderl_jax.training.metrics import RATE_COLUMNS

HERE = Path(__file__).parent
PUBLISHED = HERE / "published_curves.json"
EQUAL_FRAMES = (100_000, 300_000)  # the frame counts of the Table 1-style comparison
MARKERS = {"td3-paper": "o", "tianshou-td3": "s", "tianshou-ddpg": "^", "baselines-ppo2": "D", "cleanrl-ppo": "v"}


def base_method(label: str) -> str:
    return label.split(" @ ")[0]


def method_runs(root: Path) -> tuple[dict[str, dict[str, list]], dict[str, list[str]]]:
    """(task -> method label -> RunRecords with at least one row, task -> backend labels), from every
    comparison folder under root (a folder per method); a method of a task on one preset found in two
    comparisons is an error."""
    found: dict[str, dict[str, list]] = {}
    backends: dict[str, list[str]] = {}
    for comparison in sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").exists()):
        record = json.loads((comparison / "config.json").read_text())
        if "task" not in record:
            continue
        task = record["task"]
        labels, label = backends.setdefault(task, []), backend_label(record["environment"])
        if label not in labels:  # every backend of the task's comparisons, in order
            labels.append(label)
        for method in METHODS:
            if not (comparison / method).is_dir():
                continue
            runs = [r for r in find_runs([comparison / method]) if np.isfinite(r.metrics["frames"]).any()]
            if not runs:
                continue
            label = with_preset(method, method, recorded_preset(runs[0].config))
            if label in found.get(task, {}):
                raise SystemExit(f"{task} {label}: runs in two comparisons under {root}; keep one")
            found.setdefault(task, {})[label] = runs
    return found, backends


def values_at(runs, points: list[int], column: str = "champion_test") -> np.ndarray:
    """[seeds, points] of a column (the champion's test return) at each frame count; NaN past a run's end."""
    values = interpolate_curves([r.metrics["frames"] for r in runs], [r.metrics[column] for r in runs], points)
    reached = np.array([[np.nanmax(r.metrics["frames"]) >= p for p in points] for r in runs])
    return np.where(reached, values, np.nan)


def statistics(values: np.ndarray) -> dict:
    """Mean, std (ddof 0; none for one seed), n, and the IQM with its 95% stratified bootstrap interval
    (none for one seed) over the seeds that reached the point; per seed, None for a seed that did not."""
    finite = values[np.isfinite(values)]
    seeds = [round(float(v), 1) if np.isfinite(v) else None for v in values]
    if not finite.size:
        return {"mean": None, "std": None, "n": 0, "seeds": seeds, "iqm": None, "iqm_ci": None}
    iqm, interval = interquartile_mean(finite)
    return {"mean": float(finite.mean()), "std": float(finite.std()) if finite.size > 1 else None,
            "n": int(finite.size), "seeds": seeds, "iqm": iqm, "iqm_ci": interval}


BOOTSTRAP_RESAMPLES = 2000


def interquartile_mean(values: np.ndarray) -> tuple[float, list[float] | None]:
    """rliable's IQM of one task's runs and its 95% stratified bootstrap interval (fixed seed, so the
    report is reproducible); with one run, the value alone."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(values, np.float64)[:, None]  # [runs, tasks]
    iqm = float(metrics.aggregate_iqm(scores))
    if scores.shape[0] < 2:
        return iqm, None
    with warnings.catch_warnings():  # arch's notice that it will take a Generator one day
        warnings.simplefilter("ignore", FutureWarning)
        _, intervals = rly.get_interval_estimates({"m": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]),
                                                  reps=BOOTSTRAP_RESAMPLES, random_state=np.random.RandomState(0))
    return iqm, [float(intervals["m"][0, 0]), float(intervals["m"][1, 0])]


def selection_rates(runs) -> dict:
    """Final cumulative elite / selected / discarded rates (percent) of the synced RL actor, over the
    finished runs."""
    runs = [r for r in runs if finished_run(r.path / "summary.json")]
    if not runs:
        return {}
    rates = {"n": len(runs)}
    for column, outcome in zip(RATE_COLUMNS, TABLE2_OUTCOMES):
        final = np.array([r.metrics[column][np.isfinite(r.metrics[column])][-1] for r in runs]) * 100
        rates[outcome] = {"mean": float(final.mean()), "std": float(final.std()), "seeds": final.round(1).tolist()}
    return rates


PAPER_CLAIMS = {  # the paper's words on Figures 5 and 7 (Ant, ten draws each)
    "distilled": "generally at least as good as the parents",
    "npoint": "regularly below 40% of the best parent",
    "proximal": "often surpass the parent",
    "gaussian": "mostly negative or close to zero",
}
KEEP_THRESHOLD = 0.4  # the paper's "regularly falls below 40% the fitness of the best parent" (Figure 5)


def operator_claims(analysis: dict) -> dict:
    """Figures 5 and 7 as counts over the study's draws: per child operator, the share of children at or
    above the reference parent's return (the better parent for crossovers), the share below 40% of it
    (returns under zero count as below), and the median return relative to parent 1 (Figure 5) or the
    parent (Figure 7)."""
    crossover, mutation = analysis["crossover"], analysis["mutation"]
    better = np.maximum(crossover["parent1_fitness"], crossover["parent2_fitness"])
    parent = np.asarray(mutation["parent_fitness"])
    result = {"draws": analysis["draws"]}
    for child, children, reference in (("distilled", crossover, better), ("npoint", crossover, better),
                                       ("proximal", mutation, parent), ("gaussian", mutation, parent)):
        values = np.asarray(children[f"{child}_fitness"])
        result[child] = {"at_least_parent": float(np.mean(values >= reference)),
                         "below_40pct": float(np.mean(values < KEEP_THRESHOLD * np.maximum(reference, 0))),
                         "median_normalised": analysis["median_normalised_fitness"][child]}
    if "kl_by_magnitude" in analysis:  # the fittest member mutated at each magnitude (Figure 9)
        sweep = analysis["kl_by_magnitude"]
        result["by_magnitude"] = {"sigmas": sweep["sigmas"], **{
            child: (np.asarray(sweep[f"{child}_fitness"]) / sweep["parent_fitness"]).tolist()
            for child in ("proximal", "gaussian")}}
    return result


def operator_study(runs) -> dict:
    """operator_claims of each run with an analysis, and their mean over those runs."""
    studies = {}
    for run in runs:
        path = run.path / "analysis" / "analysis.json"
        if path.exists():
            studies[run.path.name] = operator_claims(json.loads(path.read_text()))
    if not studies:
        return {}
    children = ("distilled", "npoint", "proximal", "gaussian")
    mean = {c: {k: float(np.mean([s[c][k] for s in studies.values()])) for k in studies[next(iter(studies))][c]}
            for c in children}
    sweeps = [s["by_magnitude"] for s in studies.values() if "by_magnitude" in s]
    if sweeps and all(s["sigmas"] == sweeps[0]["sigmas"] for s in sweeps):
        mean["by_magnitude"] = {"sigmas": sweeps[0]["sigmas"], "n": len(sweeps),
                                **{c: np.mean([s[c] for s in sweeps], axis=0).tolist() for c in ("proximal", "gaussian")}}
    return {"runs": studies, "n": len(studies), "draws": sum(s["draws"] for s in studies.values()), "mean": mean}


def published_points(task: str) -> list[dict]:
    sources = json.loads(PUBLISHED.read_text())["sources"]
    return [{**{k: s[k] for k in ("key", "label", "algorithm", "task_version")}, "points": s["points"][task]}
            for s in sources if task in s["points"]]


def name(label: str) -> str:
    """"PDERL", "TD3 @ official": the method upper-cased, the preset as it is."""
    method, _, preset = label.partition(" @ ")
    return method.upper() + (f" @ {preset}" if preset else "")


def iqm_cell(stats: dict) -> str:
    if stats.get("iqm") is None:
        return "-"
    interval = stats.get("iqm_ci")
    return f"{stats['iqm']:.0f}" + (f" [{interval[0]:.0f}, {interval[1]:.0f}]" if interval else "")


def cell(stats: dict | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    spread = f" ± {stats['std']:.0f}" if stats.get("std") is not None else ""
    return f"{stats['mean']:.0f}{spread}" + (f" (n={stats['n']})" if "n" in stats else "")


def report(root: Path, points: list[int], equal_frames: tuple[int, ...] = EQUAL_FRAMES) -> dict:
    summary = {"points": points, "tasks": {}}
    lines = [f"Champion test return (mean ± std over seeds, ddof 0) at each frame count; the published "
             f"points from {PUBLISHED.name}.\n"]
    found, backends = method_runs(root)
    for task, methods in found.items():
        entry = {"methods": {}, "published": published_points(task), "selection": {}, "operators": {}}
        for method, runs in methods.items():
            values = values_at(runs, points)
            entry["methods"][method] = {
                "runs": [str(r.path.relative_to(root)) for r in runs],
                "frames": [int(np.nanmax(r.metrics["frames"])) for r in runs],
                "at": {str(p): statistics(values[:, i]) for i, p in enumerate(points)}}
            if base_method(method) in EVOLUTIONARY_MODES:  # the learner's own actor inside the method, tested beside the champion
                rl = values_at(runs, points, "rl_test")
                entry["methods"][method]["rl_actor_at"] = {str(p): statistics(rl[:, i]) for i, p in enumerate(points)}
                entry["methods"][method]["learner"] = runs[0].config.get("learner", {}).get("algorithm", "ddpg")
            training = values_at(runs, points, "training_return")
            if np.isfinite(training).any():  # PPO: the sources' measure, the last 100 training episodes
                entry["methods"][method]["training_at"] = {str(p): statistics(training[:, i])
                                                           for i, p in enumerate(points)}
            if method in TABLE2.get(task, {}) and selection_rates(runs):
                entry["selection"][method] = selection_rates(runs)
            if operator_study(runs):
                entry["operators"][method] = operator_study(runs)
        summary["tasks"][task] = entry
        lines += task_tables(task, entry, points)
        plot_task(task, methods, entry, ", ".join(backends[task]), root / f"curves_{task}.png")
    lines += equal_frames_table(summary, [p for p in equal_frames if p in points])
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    (root / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def task_tables(task: str, entry: dict, points: list[int]) -> list[str]:
    header = "| | " + " | ".join(f"{p // 1000}k" for p in points) + " |"
    lines = [f"\n### {task}\n", header, "|---|" + "---|" * len(points)]
    for method, result in entry["methods"].items():
        lines.append(f"| ours: {name(method)} | " + " | ".join(cell(result["at"][str(p)]) for p in points) + " |")
        if "rl_actor_at" in result:
            lines.append(f"| ours: {name(method)}'s {result['learner'].upper()} actor | "
                         + " | ".join(cell(result["rl_actor_at"][str(p)]) for p in points) + " |")
        if "training_at" in result:
            lines.append(f"| ours: {name(method)}, training episodes (last 100) | "
                         + " | ".join(cell(result["training_at"][str(p)]) for p in points) + " |")
    for source in entry["published"]:
        if not any(str(p) in source["points"] for p in points):
            continue
        cells = []
        for p in points:
            point = source["points"].get(str(p))
            cells.append(cell({"mean": point[0], "std": point[1]}) if point else "-")
        lines.append(f"| {source['label']} ({source['task_version']}) | " + " | ".join(cells) + " |")
    lines += ["", "Interquartile mean of our runs with its 95% stratified bootstrap interval (rliable):\n",
              header, "|---|" + "---|" * len(points)]
    for method, result in entry["methods"].items():
        lines.append(f"| ours: {name(method)} | " + " | ".join(iqm_cell(result["at"][str(p)]) for p in points) + " |")
    if entry["selection"]:
        lines += ["", "Cumulative selection rates of the synced RL actor at the end of the finished runs, percent "
                  "(paper Table 2 beside):\n", "| | elite | selected | discarded |", "|---|---|---|---|"]
        for method, rates in entry["selection"].items():
            ours = [f"{rates[o]['mean']:.1f}" + (f" ± {rates[o]['std']:.1f}" if rates["n"] > 1 else "")
                    for o in TABLE2_OUTCOMES]
            paper = [f"{m} ± {s}" for m, s in TABLE2[task][method]]
            lines.append(f"| ours: {method.upper()} (n={rates['n']}) | " + " | ".join(ours) + " |")
            lines.append(f"| paper: {method.upper()} | " + " | ".join(paper) + " |")
    for method, study in entry["operators"].items():
        lines += ["", f"Operators on the final populations of {name(method)} ({study['n']} runs, {study['draws']} "
                  "draws; `pderl-jax analyze`), the paper's Figures 5 and 7 (Ant) beside:\n",
                  "| child | at least the (better) parent | below 40% of it | median return / parent 1 | paper |",
                  "|---|---|---|---|---|"]
        for child, label in (("distilled", "distillation crossover"), ("npoint", "n-point crossover"),
                             ("proximal", "proximal mutation"), ("gaussian", "Gaussian mutation")):
            claim = study["mean"][child]
            lines.append(f"| {label} | {claim['at_least_parent']:.0%} | {claim['below_40pct']:.0%} | "
                         f"{claim['median_normalised']:.2f} | {PAPER_CLAIMS[child]} |")
        sweep = study["mean"].get("by_magnitude")
        if sweep:
            lines += ["", f"The fittest member mutated at each magnitude sigma, child return / parent return (mean "
                      f"over {sweep['n']} runs; the paper's Figure 9 in returns):\n",
                      "| sigma | " + " | ".join(f"{s:g}" for s in sweep["sigmas"]) + " |",
                      "|---|" + "---|" * len(sweep["sigmas"])]
            for child in ("proximal", "gaussian"):
                lines.append(f"| {child} | " + " | ".join(f"{v:.2f}" for v in sweep[child]) + " |")
    return lines


def equal_frames_table(summary: dict, points: list[int]) -> list[str]:
    """Every method of every task at equal frames (IQM [95% CI], rank by IQM within the column), beside the
    paper's Table 1 (its final returns at the official frame budgets); [] without points."""
    tasks = [t for t in summary["tasks"] if t in TABLE1]
    if not points or not tasks:
        return []
    methods = list(dict.fromkeys(m for t in tasks for m in summary["tasks"][t]["methods"]))
    columns = [(t, p) for t in tasks for p in points]
    ranks = {}
    for task, p in columns:
        found = {m: r["at"][str(p)]["iqm"] for m, r in summary["tasks"][task]["methods"].items()
                 if r["at"][str(p)]["iqm"] is not None}
        for rank, m in enumerate(sorted(found, key=found.get, reverse=True), 1):
            ranks[task, p, m] = rank
    header = ("| method | " + " | ".join(f"{t} {p // 1000}k" for t, p in columns) + " | "
              + " | ".join(f"paper, {t} ({PAPER_FRAMES[t] // 10**6}M)" for t in tasks) + " |")
    lines = ["\n### At equal frames, beside the paper's Table 1\n",
             "Champion test (PPO: our test of its deterministic policy): IQM of the seeds [95% stratified bootstrap "
             "interval], (rank by IQM in the column), n seeds. The paper's Table 1: mean ± std of five seeds at the "
             "official frame budget (gym v2).\n", header, "|---|" + "---|" * (len(columns) + len(tasks))]
    for method in methods:
        cells = []
        for task, p in columns:
            stats = summary["tasks"][task]["methods"].get(method, {}).get("at", {}).get(str(p))
            cells.append("-" if not stats or stats["iqm"] is None else
                         f"{iqm_cell(stats)} ({ranks[task, p, method]}) n={stats['n']}")
        # the paper ran each method on its default learner (TD3: the authors' own, our td3-2018)
        paper = [paper_result(t, method) if " @ " not in method else None for t in tasks]
        cells += [f"{r['mean']} ± {r['std']}" if r else "-" for r in paper]
        lines.append(f"| {name(method)} | " + " | ".join(cells) + " |")
    return lines


def plot_task(task: str, methods: dict, entry: dict, backend: str, path: Path) -> None:
    fig, (ax,) = new_figure(7.5, 4.6)
    top = max(np.nanmax(r.metrics["frames"]) for runs in methods.values() for r in runs)
    grid = np.linspace(0, top, 200)
    for method, runs in methods.items():
        curves = values_at(runs, list(grid))
        with warnings.catch_warnings():  # grid points past every run's end are NaN, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        line, = ax.plot(grid, mean, label=f"{name(method)} (ours, {len(runs)} seeds)")
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        if "training_at" in entry["methods"][method]:  # PPO: also the sources' measure, as they plot it
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                training = np.nanmean(values_at(runs, list(grid), "training_return"), axis=0)
            ax.plot(grid, training, linestyle="--", color=line.get_color(),
                    label=f"{name(method)} (ours), training episodes (last 100)")
    for shift, source in enumerate(s for s in entry["published"] if s["key"] in MARKERS):
        xs = [int(p) for p in source["points"] if int(p) <= top * 1.05]
        ys = [source["points"][str(x)][0] for x in xs]
        es = [source["points"][str(x)][1] or 0.0 for x in xs]  # no spread published: a bare marker
        offset = (shift - 1) * 0.012 * top  # side by side at the same frame count
        ax.errorbar(np.asarray(xs) + offset, ys, yerr=es, fmt=MARKERS[source["key"]], color="black", alpha=0.6,
                    capsize=3,
                    label=f"{source['label']} ({source['task_version'].split(' ')[0]})")
    ax.set_xlabel("frames")
    ax.set_ylabel("champion test return")
    ax.set_title(f"{task} ({backend}): ours, mean ± std over seeds; published points", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=HERE / "results" / "learning_curves")
    parser.add_argument("--points", default="100000,200000,300000,1000000",
                        help="frame counts to read the curves at (comma-separated)")
    args = parser.parse_args(argv)
    points = [int(p) for p in args.points.split(",")]
    if not points or any(p <= 0 for p in points):
        raise SystemExit("--points must be positive frame counts")
    report(args.root, points)


if __name__ == "__main__":
    main()
