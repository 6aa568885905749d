"""Collect `pderl-jax compare` folders into benchmarks/results/compare_<task>/ and print RESULTS.md sections.

usage: python benchmarks/comparison_results.py results/compare-halfcheetah [results/compare-hopper,results/x ...]

Each argument is one task: a comparison folder, or several joined by commas (comparison folders
and bare method folders, e.g. the runs of a method whose comparison was stopped early).

Copies each comparison's table (MD, CSV), Figure 4, summary and per-run metrics, and prints for
each task: our table, the paper's Table 1 beside it, and the wall-clock per method.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pderl_jax.experiments.compare import METHODS, final_statistics, final_tests, format_table, write_report
from pderl_jax.experiments.paper import PAPER_FRAMES, side_by_side

RESULTS = Path(__file__).parent / "results"


def summary_of(folders: list[Path]) -> dict:
    """One comparison summary from comparison folders and bare method folders (the runs of a method
    whose comparison was stopped before its own summary: finals from the CSVs, time from the sweep)."""
    summary, methods = None, {}
    for folder in folders:
        if (folder / "summary.json").exists() and "methods" in json.loads((folder / "summary.json").read_text()):
            found = json.loads((folder / "summary.json").read_text())
            summary = summary or found
            methods.update(found["methods"])
            continue
        sweep = json.loads((folder / "summary.json").read_text())
        runs = sorted(folder.glob("run_*"))
        finals = final_tests(runs)
        methods[folder.name] = {**final_statistics(finals), "finals": finals, "wall_s": sweep["wall_s"],
                                "compile_s": sweep["compile_s"], "runs": [f"{folder.name}/{r.name}" for r in runs]}
    summary["methods"] = methods
    return summary


def collect(folders: list[Path]) -> str:
    summary = summary_of(folders)
    folder = folders[0]
    for other in folders[1:]:  # gather every method's runs beside the first comparison's
        for method in summary["methods"]:
            if (other / method).is_dir() and not (folder / method).exists():
                shutil.copytree(other / method, folder / method)
            elif other.name == method and not (folder / method).exists():
                shutil.copytree(other, folder / method)
    summary["methods"] = {m: summary["methods"][m] for m in METHODS if m in summary["methods"]}  # paper order
    write_report(summary, folder, print_fn=lambda _: None)  # the current table format, paper columns included
    target = RESULTS / f"compare_{summary['task']}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("table.md", "table.csv", "figure4.png", "summary.json"):
        shutil.copy(folder / name, target / name)
    for method in summary["methods"]:
        for run in sorted((folder / method).glob("run_*")):
            (target / method / run.name).mkdir(parents=True)
            shutil.copy(run / "metrics.csv", target / method / run.name / "metrics.csv")
    env = summary["environment"]
    return "\n".join([
        f"### {summary['task']}: brax {env.get('physics', env['backend'])} physics, {summary['frames']:,} frames, "
        f"seeds {summary['seeds']}",
        "",
        f"Wall-clock on {summary['device']}.",
        "",
        format_table(summary),
        "",
        f"Beside Table 1 (gym v2, {PAPER_FRAMES[summary['task']]:,} frames):",
        "",
        side_by_side(summary),
        "",
        f"![Figure 4, {summary['task']}](benchmarks/results/compare_{summary['task']}/figure4.png)",
        "",
    ])


if __name__ == "__main__":
    print("\n".join(collect([Path(f) for f in task.split(",")]) for task in sys.argv[1:]))
