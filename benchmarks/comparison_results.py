"""Collect `pderl-jax compare` folders into benchmarks/results/compare_<task>/ and print RESULTS.md sections.

usage: python benchmarks/comparison_results.py results/compare-hopper results/compare-halfcheetah

Copies each comparison's table (MD, CSV), Figure 4, summary and per-run metrics, and prints for
each task: our table, the paper's Table 1 beside it, and the wall-clock per method.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pderl_jax.compare import format_table, write_report
from pderl_jax.paper import PAPER_FRAMES, side_by_side

RESULTS = Path(__file__).parent / "results"


def collect(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
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
        f"### {summary['task']}: brax {env['backend']} physics, {summary['frames']:,} frames, "
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
    print("\n".join(collect(Path(folder)) for folder in sys.argv[1:]))
