"""benchmarks/learning_curves.py against hand-computed statistics of synthetic comparison folders: values at
frame counts (last row at or before, NaN past a run's end), mean and std (ddof 0), Table 2 rates over the
finished runs only, and the Figure 5/7 counts from `pderl-jax analyze` output."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pderl_jax.training.metrics import CSV_COLUMNS

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "learning_curves.py"
spec = importlib.util.spec_from_file_location("learning_curves_script", SCRIPT)
learning_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_curves)

POINTS = [100, 200, 300]


def write_comparison(folder: Path, task: str, methods: list[str]) -> None:
    folder.mkdir(parents=True)
    record = {"task": task, "methods": methods, "seeds": [0, 1, 2], "frames": 300, "overrides": {},
              "environment": {"name": task, "backend": "gymnasium", "episode_length": 1000}}
    (folder / "config.json").write_text(json.dumps(record))


def write_run(folder: Path, seed: int, mode: str, rows: list[dict], finished: bool | None,
              preset: str | None = None, **recorded) -> None:
    """A run folder; without `preset` its config.json has none, as the records written before presets;
    `recorded`: more fields of its config.json."""
    folder.mkdir(parents=True)
    record = {"task": "hopper", "mode": mode, "seed": seed, **({"preset": preset} if preset else {}), **recorded}
    (folder / "config.json").write_text(json.dumps(record))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "nan") for c in CSV_COLUMNS})
    if finished is not None:
        (folder / "summary.json").write_text(json.dumps({"interrupted": not finished}))


def random_rows(rng, last_frames: int) -> list[dict]:
    frames = np.sort(rng.choice(np.arange(1, last_frames), size=5, replace=False)).tolist() + [last_frames]
    return [{"generation": i + 1, "frames": f, "wall_s": float(i), "champion_test": float(rng.normal(500, 300)),
             "rl_test": float(rng.normal(200, 100)), "elite_rate": float(rng.uniform()),
             "selected_rate": float(rng.uniform()), "discarded_rate": float(rng.uniform())}
            for i, f in enumerate(frames)]


def reference_value(rows: list[dict], point: int, column: str) -> float:
    """The last row at or before `point`; NaN before the first row or past the run's last frame count."""
    if rows[-1]["frames"] < point:
        return float("nan")
    before = [r for r in rows if r["frames"] <= point]
    return before[-1][column] if before else float("nan")


def test_report_matches_hand_computed_statistics(tmp_path):
    rng = np.random.default_rng()
    write_comparison(tmp_path / "Hopper", "hopper", ["pderl", "td3"])
    pderl_rows, finished = [], [True, True, None]  # the third stopped without a summary
    for seed, last in enumerate([300, 320, 250]):  # the third ends before 300 frames
        rows = random_rows(rng, last)
        pderl_rows.append(rows)
        write_run(tmp_path / "Hopper" / "pderl" / f"run_{seed:03d}", seed, "pderl", rows, finished[seed])
    td3_rows = [random_rows(rng, 300) for _ in range(2)]
    for seed, rows in enumerate(td3_rows):
        write_run(tmp_path / "Hopper" / "td3" / f"run_{seed:03d}", seed, "td3", rows, True, preset="td3-2018")
    # the same methods on other presets, in comparisons of their own: entries of their own
    write_comparison(tmp_path / "Hopper-official-td3", "hopper", ["td3"])
    write_run(tmp_path / "Hopper-official-td3" / "td3" / "run_000", 0, "td3", random_rows(rng, 300), True)
    write_comparison(tmp_path / "Hopper-pderl-td3", "hopper", ["pderl"])
    write_run(tmp_path / "Hopper-pderl-td3" / "pderl" / "run_000", 0, "pderl", random_rows(rng, 300), True,
              preset="td3-2018")
    parents = rng.normal(1000, 400, size=(3, 8))
    children = rng.normal(800, 600, size=(4, 8))
    analysis = {"draws": 8,
                "crossover": {"parent1_fitness": parents[0].tolist(), "parent2_fitness": parents[1].tolist(),
                              "distilled_fitness": children[0].tolist(), "npoint_fitness": children[1].tolist()},
                "mutation": {"parent_fitness": parents[2].tolist(), "proximal_fitness": children[2].tolist(),
                             "gaussian_fitness": children[3].tolist()},
                "median_normalised_fitness": {k: float(rng.uniform()) for k in
                                              ("distilled", "npoint", "proximal", "gaussian")},
                "kl_by_magnitude": {"sigmas": [0.01, 0.1, 1.0], "parent_fitness": float(rng.uniform(500, 900)),
                                    "proximal_fitness": rng.normal(500, 300, 3).tolist(),
                                    "gaussian_fitness": rng.normal(200, 300, 3).tolist()}}
    (tmp_path / "Hopper" / "pderl" / "run_000" / "analysis").mkdir()
    (tmp_path / "Hopper" / "pderl" / "run_000" / "analysis" / "analysis.json").write_text(json.dumps(analysis))

    summary = learning_curves.report(tmp_path, POINTS)
    entry = summary["tasks"]["hopper"]
    assert list(entry["methods"]) == ["pderl", "td3", "td3 @ official", "pderl @ td3-2018"]
    for method, runs in (("pderl", pderl_rows), ("td3", td3_rows)):
        for point in POINTS:
            values = np.array([reference_value(rows, point, "champion_test") for rows in runs])
            finite = values[np.isfinite(values)]
            got = entry["methods"][method]["at"][str(point)]
            assert got["n"] == finite.size
            if not finite.size:  # every seed's first row comes after the point
                assert got["mean"] is None and got["iqm"] is None
                continue
            # IQM: the mean of the middle half (scipy's 25% trimmed mean); its bootstrap interval holds it
            assert got["iqm"] == pytest.approx(stats.trim_mean(finite, 0.25), rel=1e-9)
            if finite.size == 1:
                assert got["iqm_ci"] is None
            else:
                low, high = got["iqm_ci"]
                assert finite.min() - 1e-9 <= low <= got["iqm"] <= high <= finite.max() + 1e-9
                assert high > low
            assert got["mean"] == pytest.approx(np.mean(finite), rel=1e-9)
            if finite.size == 1:
                assert got["std"] is None  # no spread from one seed
            else:
                assert got["std"] == pytest.approx(np.sqrt(np.mean((finite - np.mean(finite)) ** 2)), rel=1e-9)
    assert entry["methods"]["pderl"]["at"]["300"]["n"] == 2 and entry["methods"]["pderl"]["at"]["300"]["seeds"][2] is None
    for point in POINTS:  # the DDPG actor's column, read the same way
        values = np.array([reference_value(rows, point, "rl_test") for rows in pderl_rows])
        finite = values[np.isfinite(values)]
        got = entry["methods"]["pderl"]["rl_actor_at"][str(point)]
        assert got["n"] == finite.size
        assert got["mean"] == (pytest.approx(np.mean(finite), rel=1e-9) if finite.size else None)
    assert "rl_actor_at" not in entry["methods"]["td3"]

    rates = entry["selection"]["pderl"]
    assert rates["n"] == 2  # the unfinished run is left out
    for column, outcome in (("elite_rate", "elite"), ("selected_rate", "selected"), ("discarded_rate", "discarded")):
        finals = [100 * pderl_rows[i][-1][column] for i in (0, 1)]
        assert rates[outcome]["mean"] == pytest.approx(sum(finals) / 2, rel=1e-9)

    study = entry["operators"]["pderl"]
    assert study["n"] == 1 and study["draws"] == 8
    better = [max(a, b) for a, b in zip(parents[0], parents[1])]
    for child, values, reference in (("distilled", children[0], better), ("npoint", children[1], better),
                                     ("proximal", children[2], parents[2]), ("gaussian", children[3], parents[2])):
        kept = sum(v >= r for v, r in zip(values, reference)) / 8
        lost = sum(v < 0.4 * max(r, 0.0) for v, r in zip(values, reference)) / 8
        assert study["mean"][child]["at_least_parent"] == pytest.approx(kept)
        assert study["mean"][child]["below_40pct"] == pytest.approx(lost)
        assert study["mean"][child]["median_normalised"] == analysis["median_normalised_fitness"][child]

    sweep = analysis["kl_by_magnitude"]
    for child in ("proximal", "gaussian"):
        expected = [v / sweep["parent_fitness"] for v in sweep[f"{child}_fitness"]]
        assert study["mean"]["by_magnitude"][child] == pytest.approx(expected, rel=1e-12)

    table = (tmp_path / "table.md").read_text()
    assert "| ours: PDERL |" in table and "Figures 5 and 7" in table and "paper: PDERL" in table
    assert (tmp_path / "curves_hopper.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))

    write_comparison(tmp_path / "Hopper-again", "hopper", ["td3"])  # one method on one preset twice: refused
    write_run(tmp_path / "Hopper-again" / "td3" / "run_000", 0, "td3", random_rows(rng, 300), True, preset="td3-2018")
    with pytest.raises(SystemExit, match="hopper td3: runs in two comparisons"):
        learning_curves.report(tmp_path, POINTS)


def test_ppo_training_returns_and_the_equal_frames_table(tmp_path):
    """PPO's training-episode column is read like the test column; the equal-frames table ranks every
    method by IQM within each task and frame count and sets the paper's Table 1 beside the default learners."""
    rng = np.random.default_rng()
    ppo_rows = []
    for seed in range(3):
        rows = random_rows(rng, 300)
        for row in rows:
            row["training_return"] = float(rng.normal(100, 50))
        ppo_rows.append(rows)
    write_comparison(tmp_path / "Hopper-ppo", "hopper", ["ppo"])
    for seed, rows in enumerate(ppo_rows):
        write_run(tmp_path / "Hopper-ppo" / "ppo" / f"run_{seed:03d}", seed, "ppo", rows, True, preset="cleanrl",
                  loss="cleanrl")
    write_comparison(tmp_path / "Hopper", "hopper", ["td3"])
    for seed in range(3):
        write_run(tmp_path / "Hopper" / "td3" / f"run_{seed:03d}", seed, "td3", random_rows(rng, 300), True,
                  preset="td3-2018")
    write_comparison(tmp_path / "Hopper-official", "hopper", ["td3"])
    write_run(tmp_path / "Hopper-official" / "td3" / "run_000", 0, "td3", random_rows(rng, 300), True)

    summary = learning_curves.report(tmp_path, POINTS, equal_frames=(100, 300))
    methods = summary["tasks"]["hopper"]["methods"]
    for point in POINTS:
        values = np.array([reference_value(rows, point, "training_return") for rows in ppo_rows])
        finite = values[np.isfinite(values)]
        got = methods["ppo"]["training_at"][str(point)]
        assert got["n"] == finite.size
        assert got["mean"] == (pytest.approx(np.mean(finite), rel=1e-9) if finite.size else None)
    assert "training_at" not in methods["td3"]  # NaN throughout: not measured

    table = (tmp_path / "table.md").read_text()
    lines = {line.split(" | ")[0]: line.split(" | ")[1:] for line in table.splitlines()
             if line.startswith("| ") and "equal frames" not in line}
    for column, point in enumerate((100, 300)):
        found = {m: methods[m]["at"][str(point)]["iqm"] for m in methods if methods[m]["at"][str(point)]["iqm"] is not None}
        order = sorted(found, key=found.get, reverse=True)
        for rank, method in enumerate(order, 1):
            label = "| " + learning_curves.name(method)
            assert f"({rank}) n={methods[method]['at'][str(point)]['n']}" in lines[label][column]
    assert lines["| TD3"][2].startswith("3231 ± 213") and lines["| PPO"][2].startswith("2348 ± 342")  # Table 1
    assert lines["| TD3 @ official"][2].startswith("-")  # the paper ran TD3 as its authors set it
