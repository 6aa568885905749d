"""The paper's numbers: Table 1 (final performance over five seeds, gym v2 tasks, official frame budgets)
and Table 2 (the RL actor's cumulative selection rates)."""

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

# Table 2: how often the synced RL actor became an elite, was selected or was discarded, cumulative over the
# run, in percent: task -> method -> (mean, std) of each outcome
TABLE2_OUTCOMES = ("elite", "selected", "discarded")
TABLE2 = {
    "swimmer": {"erl": ((4.0, 2.8), (20.3, 18.1), (76.0, 20.4)), "pderl": ((3.9, 2.7), (11.7, 4.7), (84.3, 7.3))},
    "halfcheetah": {"erl": ((83.8, 9.3), (14.3, 9.1), (2.3, 2.5)), "pderl": ((71.6, 3.3), (21.5, 3.1), (6.8, 2.6))},
    "hopper": {"erl": ((28.7, 8.5), (33.7, 4.1), (37.7, 4.5)), "pderl": ((5.3, 1.4), (29.0, 2.7), (65.6, 3.6))},
    "walker2d": {"erl": ((38.5, 1.5), (39.0, 1.9), (22.5, 0.5)), "pderl": ((4.3, 1.5), (20.6, 5.7), (75.0, 4.8))},
    "ant": {"erl": ((66.7, 1.7), (15.0, 1.4), (18.0, 0.8)), "pderl": ((29.7, 2.5), (26.2, 1.2), (44.0, 2.9))},
}


def paper_result(task: str, method: str) -> dict | None:
    """{'mean', 'std', 'median'} of Table 1, or None for a method the table does not have (ddpg)."""
    if task not in TABLE1 or method not in TABLE1_METHODS:
        return None
    column = TABLE1_METHODS.index(method)
    return {metric: TABLE1[task][metric][column] for metric in ("mean", "std", "median")}


def side_by_side(summary: dict) -> str:
    """Markdown: a comparison's final statistics next to Table 1's, method by method."""
    task = summary["task"]
    lines = ["| method | mean | std | median | paper mean | paper std | paper median | mean / paper |",
             "|---|---|---|---|---|---|---|---|"]
    for method, result in summary["methods"].items():
        paper = paper_result(task, method)
        cells = [f"{result[m]:.0f}" for m in ("mean", "std", "median")]
        paper_cells = [f"{paper[m]}" for m in ("mean", "std", "median")] if paper else ["-"] * 3
        ratio = f"{result['mean'] / paper['mean']:.1%}" if paper else "-"
        lines.append(f"| {method.upper()} | " + " | ".join(cells + paper_cells + [ratio]) + " |")
    return "\n".join(lines)
