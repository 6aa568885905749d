"""The paper's Table 1 (final performance over five seeds, gym v2 tasks, official frame budgets)."""

from __future__ import annotations

TABLE1_METHODS = ("td3", "ppo", "erl", "perl", "derl", "pderl")
# task -> metric -> values in TABLE1_METHODS order
TABLE1 = {
    "swimmer": {"mean": (53, 113, 334, 327, 333, 337), "std": (26, 3, 20, 26, 6, 12),
                "median": (51, 114, 346, 354, 338, 348)},
    "halfcheetah": {"mean": (11534, 1810, 10963, 13668, 11362, 13522), "std": (713, 28, 225, 236, 358, 287),
                    "median": (11334, 1810, 11025, 13625, 11609, 13553)},
    "hopper": {"mean": (3231, 2348, 2049, 3497, 2869, 3397), "std": (213, 342, 841, 63, 920, 202),
               "median": (3282, 2484, 1807, 3501, 3446, 3400)},
    "walker2d": {"mean": (4925, 3816, 1666, 3364, 4050, 5184), "std": (476, 413, 737, 818, 1170, 477),
                 "median": (5190, 3636, 1384, 3804, 4491, 5333)},
    "ant": {"mean": (6212, 3151, 4330, 4528, 4911, 6845), "std": (216, 686, 1806, 2003, 1920, 407),
            "median": (6121, 3337, 5164, 3331, 5693, 6948)},
}
# official frame budgets (run_erl.py / the PDERL code), the x-axis end of Figure 4
PAPER_FRAMES = {"swimmer": 2_000_000, "halfcheetah": 6_000_000, "hopper": 4_000_000, "walker2d": 8_000_000,
                "ant": 6_000_000}


def paper_result(task: str, method: str) -> dict | None:
    """{'mean', 'std', 'median'} of Table 1, or None for a method the table does not have (ddpg)."""
    if task not in TABLE1 or method not in TABLE1_METHODS:
        return None
    column = TABLE1_METHODS.index(method)
    return {metric: TABLE1[task][metric][column] for metric in ("mean", "std", "median")}


def side_by_side(summary: dict) -> str:
    """Markdown: a comparison's final statistics next to Table 1's, method by method."""
    task = summary["task"]
    lines = [f"| method | mean | std | median | paper mean | paper std | paper median | mean / paper |",
             "|---|---|---|---|---|---|---|---|"]
    for method, result in summary["methods"].items():
        paper = paper_result(task, method)
        cells = [f"{result[m]:.0f}" for m in ("mean", "std", "median")]
        paper_cells = [f"{paper[m]}" for m in ("mean", "std", "median")] if paper else ["-"] * 3
        ratio = f"{result['mean'] / paper['mean']:.1%}" if paper else "-"
        lines.append(f"| {method.upper()} | " + " | ".join(cells + paper_cells + [ratio]) + " |")
    return "\n".join(lines)
