"""Learning curves across runs: the t band against closed forms, step interpolation, figures and curves.json."""

import csv
import json
import math
import time
import warnings

import numpy as np
import pytest

from pderl_jax.analysis.curves import confidence_band, find_runs, interpolate_curves, plot_runs, plot_single_run
from pderl_jax.config import ConfigError, load_config, to_dict
from pderl_jax.training.metrics import CSV_COLUMNS

# Two-sided 95% Student-t quantiles t_{0.975, df}, independent of scipy: closed forms for df 1 and 2
# (the Cauchy quantile tan(pi (p - 1/2)); (2p - 1) / sqrt(2 p (1 - p))), a table value for df 4.
T975 = {1: math.tan(math.pi * 0.475), 2: 0.95 / math.sqrt(2 * 0.975 * 0.025), 4: 2.7764451051977987}


def reference_band(x):
    """mean +- t * s / sqrt(n) over axis 0 of a NaN-free float64 array."""
    n = x.shape[0]
    mean = x.mean(axis=0)
    half = T975[n - 1] * x.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


@pytest.mark.parametrize("runs", [2, 3, 5])
def test_confidence_band_matches_the_t_interval(runs):
    assert T975[2] == pytest.approx(4.302652729911275, rel=1e-10)  # the usual tabulated value
    x = np.random.default_rng().normal(3.0, 2.0, size=(runs, 64))
    for data in (x, x.astype(np.float32)):
        expected = reference_band(np.asarray(data, np.float64))
        for got, want in zip(confidence_band(data), expected):
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_confidence_band_ignores_nans_per_point():
    rng = np.random.default_rng()
    x = rng.normal(size=(5, 6))
    # column j keeps 5, 3, 2, 1, 0 finite values (and column 5 has an inf, counted as missing)
    x[3:, 1] = np.nan
    x[[0, 2, 4], 2] = np.nan
    x[1:, 3] = np.nan
    x[:, 4] = np.nan
    x[2, 5] = np.inf
    mean, low, high = confidence_band(x)
    for j, rows in ((0, [0, 1, 2, 3, 4]), (1, [0, 1, 2]), (2, [1, 3]), (5, [0, 1, 3, 4])):
        if len(rows) - 1 in T975:
            want = reference_band(x[rows, j:j + 1])
            np.testing.assert_allclose([mean[j], low[j], high[j]], [w[0] for w in want], rtol=1e-12)
        else:  # 4 finite values: only the mean is checked against the reference here
            np.testing.assert_allclose(mean[j], x[rows, j].mean(), rtol=1e-12)
            assert low[j] < mean[j] < high[j]
    assert mean[3] == low[3] == high[3] == x[0, 3]  # one value: the interval is the mean
    assert np.isnan([mean[4], low[4], high[4]]).all()
    one_run = confidence_band(x[0])  # a 1-D curve is one run
    np.testing.assert_array_equal(one_run[0], x[0]) and np.testing.assert_array_equal(one_run[1], one_run[2])


def test_interpolate_curves_is_a_step_function_nan_before_the_first_row():
    grid = [0, 10, 12, 15, 20, 25, 30, 40]
    out = interpolate_curves([[10, 20, 30], [15, 25], [10, 10, np.nan, 20], []],
                             [[1, 2, 3], [5, 6], [7, 8, 100, 9], []], grid)
    nan = np.nan
    np.testing.assert_array_equal(out, [[nan, 1, 1, 1, 2, 2, 3, 3],
                                        [nan, nan, nan, 5, 5, 6, 6, 6],
                                        [nan, 8, 8, 8, 9, 9, 9, 9],  # equal x: the later row; NaN x dropped
                                        [nan] * 8])
    with pytest.raises(ValueError):
        interpolate_curves([[1, 2]], [[1]], grid)


# ------------------------------------------------------------------------------- synthetic runs


def write_run(folder, mode, seed, rows, task="hopper", sweep=None, rng=None, preset=None):
    """A run folder as `pderl-jax train` / `sweep` writes it, with made-up metrics; returns the rows."""
    rng = rng or np.random.default_rng()
    folder.mkdir(parents=True)
    chosen = {"preset": preset} if preset else {"learner.algorithm": "td3" if mode == "td3" else "ddpg"}
    config = to_dict(load_config(task, {"mode": mode, **chosen, "seed": seed, "frames": 10_000}))
    config["environment"] = {"name": task, "backend": "spring", "episode_length": 1000}
    if sweep is not None:
        config["sweep"] = sweep
    (folder / "config.json").write_text(json.dumps(config))
    frames = np.cumsum(rng.integers(500, 1500, size=rows))
    wall = np.cumsum(rng.uniform(0.5, 2.0, size=rows))
    population = mode != "td3"
    out = []
    for g in range(rows):
        fitness = rng.normal(100 + 10 * g, 30, size=4)
        nan = float("nan")
        rate = lambda: float(rng.uniform()) if population else nan
        out.append({"generation": g + 1, "frames": int(frames[g]), "wall_s": round(float(wall[g]), 3),
                    "best_fitness": float(fitness.max()) if population else nan,
                    "pop_mean": float(fitness.mean()) if population else nan,
                    "pop_min": float(fitness.min()) if population else nan,
                    "pop_max": float(fitness.max()) if population else nan,
                    "champion_test": float(rng.normal(100 + 12 * g, 20)), "rl_test": float(rng.normal(90 + 8 * g, 20)),
                    "critic_loss": 0.1, "actor_loss": -1.0, "elite_rate": rate(), "selected_rate": rate(),
                    "discarded_rate": rate(), "synced": int(population)})
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(out)
    return out


def step_reference(x_runs, y_runs, grid):
    """Independent step interpolation (a plain loop), NaN past the group's longest run."""
    end = max(max(x) for x in x_runs)
    out = np.full((len(x_runs), len(grid)), np.nan)
    for i, (x, y) in enumerate(zip(x_runs, y_runs)):
        for j, g in enumerate(grid):
            before = [k for k in range(len(x)) if x[k] <= g]
            if before and g <= end:
                out[i, j] = y[before[-1]]
    return out


def from_json(values):
    return np.array([np.nan if v is None else v for v in values], np.float64)


@pytest.fixture
def experiment(tmp_path):
    rng = np.random.default_rng()
    runs_dir, sweep_dir = tmp_path / "runs", tmp_path / "sweep"
    rows = {}
    for seed in range(3):
        rows[f"pderl_{seed}"] = write_run(runs_dir / f"pderl_s{seed}", "pderl", seed, int(rng.integers(6, 12)), rng=rng)
    for seed in range(2):
        rows[f"td3_{seed}"] = write_run(runs_dir / f"td3_s{seed}", "td3", seed, int(rng.integers(6, 12)), rng=rng)
    for i, (lr, seed) in enumerate([(1e-4, 0), (1e-4, 1), (2e-4, 0)]):
        rows[f"sweep_{i}"] = write_run(sweep_dir / f"run_{i:03d}", "pderl", seed, 8,
                                       sweep={"learner.actor_lr": lr}, rng=rng)
    (sweep_dir / "runs.csv").write_text("run,seed\n0,0\n1,1\n2,0\n")
    (runs_dir / "notes").mkdir()  # a folder without a run is ignored
    return tmp_path, runs_dir, sweep_dir, rows


def test_find_runs_expands_sweeps_and_folders_of_runs(experiment):
    tmp_path, runs_dir, sweep_dir, rows = experiment
    runs = find_runs([runs_dir, sweep_dir, runs_dir / "pderl_s0" / "metrics.csv"])  # the duplicate is dropped
    assert [r.path.name for r in runs] == ["pderl_s0", "pderl_s1", "pderl_s2", "td3_s0", "td3_s1",
                                           "run_000", "run_001", "run_002"]
    assert [r.label for r in runs] == ["pderl"] * 3 + ["td3"] * 2 + ["pderl actor_lr=0.0001"] * 2 + [
        "pderl actor_lr=0.0002"]
    assert [r.seed for r in runs] == [0, 1, 2, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(runs[3].metrics["champion_test"], [r["champion_test"] for r in rows["td3_0"]])
    assert np.isnan(runs[3].metrics["pop_mean"]).all() and not runs[3].has_population and runs[0].has_population
    # one level down: the sweep folder is expanded, the plain folder of runs two levels down is not searched
    assert [r.path.name for r in find_runs(tmp_path)] == ["run_000", "run_001", "run_002"]
    assert [r.label for r in find_runs(runs_dir / "td3_s1")] == ["td3"]


def test_labels_name_the_task_when_runs_span_several(tmp_path):
    write_run(tmp_path / "a", "pderl", 0, 3, task="hopper")
    write_run(tmp_path / "b", "pderl", 0, 3, task="swimmer")
    write_run(tmp_path / "c", "td3", 0, 3, task="swimmer")
    assert [r.label for r in find_runs(tmp_path)] == ["hopper pderl", "swimmer pderl", "swimmer td3"]


def test_labels_name_a_preset_other_than_the_modes_default(tmp_path):
    write_run(tmp_path / "a", "pderl", 0, 3)
    write_run(tmp_path / "b", "pderl", 0, 3, preset="td3-2018")
    write_run(tmp_path / "c", "td3", 0, 3)
    write_run(tmp_path / "d", "td3", 0, 3, preset="official")
    assert [r.label for r in find_runs(tmp_path)] == ["pderl (ddpg learner)", "pderl (td3 learner) @ td3-2018", "td3",
                                                      "td3 @ official"]


def test_find_runs_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        find_runs(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'empty'}: no training runs found"):
        find_runs(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no run folders given"):
        find_runs([])
    half = tmp_path / "half"
    half.mkdir()
    (half / "metrics.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    with pytest.raises(ConfigError, match=f"{half}: has metrics.csv but no config.json"):
        find_runs(half)
    (half / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=f"{half / 'config.json'}: not a readable JSON config"):
        find_runs(half)
    (half / "config.json").write_text(json.dumps({"task": "hopper", "mode": "pderl", "seed": 1}))
    (half / "metrics.csv").write_text("generation,frames,champion_test\n1,100,oops\n")
    with pytest.raises(ConfigError, match=r"metrics.csv, line 2, column 'champion_test': 'oops'"):
        find_runs(half)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="file.txt: expected a run folder"):
        find_runs(tmp_path / "file.txt")
    (half / "metrics.csv").write_text(",".join(CSV_COLUMNS) + "\n")  # header only: found, but nothing to plot
    assert find_runs(half)[0].rows == 0
    with pytest.raises(ConfigError, match="no metrics rows"):
        plot_runs(half, tmp_path / "out")


def test_plot_runs_writes_figures_and_curves_json_matching_numpy(experiment):
    tmp_path, runs_dir, sweep_dir, rows = experiment
    out = tmp_path / "plots"
    files = plot_runs([runs_dir, sweep_dir], out)
    assert [p.name for p in files] == ["learning_curves.png", "population_spread.png", "selection_rates.png",
                                       "curves.json"]
    for path in files[:-1]:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path
    curves = json.loads((out / "curves.json").read_text())
    assert list(curves["groups"]) == ["pderl", "td3", "pderl actor_lr=0.0001", "pderl actor_lr=0.0002"]
    all_rows = list(rows.values())
    for axis in ("frames", "wall_s"):
        grid = np.asarray(curves["grid"][axis])
        assert grid[0] == min(r[0][axis] for r in all_rows) and grid[-1] == max(r[-1][axis] for r in all_rows)
    groups = {"pderl": ["pderl_0", "pderl_1", "pderl_2"], "td3": ["td3_0", "td3_1"],
              "pderl actor_lr=0.0001": ["sweep_0", "sweep_1"], "pderl actor_lr=0.0002": ["sweep_2"]}
    seeds = {"pderl": [0, 1, 2], "td3": [0, 1], "pderl actor_lr=0.0001": [0, 1], "pderl actor_lr=0.0002": [0]}
    checked = 0
    for label, names in groups.items():
        group = curves["groups"][label]
        assert group["seeds"] == seeds[label] and group["mode"] == label.split()[0]
        population = label != "td3"
        expected_quantities = {"frames": ["champion_test", "rl_test"] + (
            ["pop_mean", "pop_min", "pop_max", "elite_rate", "selected_rate", "discarded_rate"] if population else []),
            "wall_s": ["champion_test", "rl_test"]}
        for axis, quantities in expected_quantities.items():
            assert sorted(group[axis]) == sorted(quantities), (label, axis)
            grid = np.asarray(curves["grid"][axis])
            for q in quantities:
                values = step_reference([[r[axis] for r in rows[n]] for n in names],
                                        [[r[q] for r in rows[n]] for n in names], grid)
                with warnings.catch_warnings():  # all-NaN points (before a group's first row) give NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    want = np.nanmean(values, axis=0)
                np.testing.assert_allclose(from_json(group[axis][q]["mean"]), want, rtol=1e-12, equal_nan=True)
                n = np.isfinite(values).sum(axis=0)
                assert group[axis][q]["n"] == n.tolist()
                low, high = from_json(group[axis][q]["low"]), from_json(group[axis][q]["high"])
                full = n == len(names)
                if len(names) in (2, 3):  # every run present: the closed-form t interval
                    ref = reference_band(values[:, full])
                    np.testing.assert_allclose(low[full], ref[1], rtol=1e-12, atol=1e-9)
                    np.testing.assert_allclose(high[full], ref[2], rtol=1e-12, atol=1e-9)
                    checked += int(full.sum())
                np.testing.assert_array_equal(low[n == 1], want[n == 1])
                np.testing.assert_array_equal(high[n == 1], want[n == 1])
    assert checked > 100


def test_learner_only_runs_give_no_population_or_selection_figures(experiment):
    tmp_path, runs_dir, _, _ = experiment
    files = plot_runs([runs_dir / "td3_s0", runs_dir / "td3_s1"], tmp_path / "td3")
    assert [p.name for p in files] == ["learning_curves.png", "curves.json"]
    curves = json.loads(files[-1].read_text())
    assert list(curves["groups"]) == ["td3"] and curves["figures"] == ["learning_curves.png"]


def test_plot_single_run_is_fast_and_survives_short_runs(tmp_path):
    write_run(tmp_path / "long", "pderl", 0, 2000)
    plot_single_run(tmp_path / "long")  # warm matplotlib up
    start = time.perf_counter()
    path = plot_single_run(tmp_path / "long")
    assert time.perf_counter() - start < 2.0
    assert path == tmp_path / "long" / "learning_curve.png" and path.read_bytes()[:4] == b"\x89PNG"
    for mode in ("pderl", "td3"):
        write_run(tmp_path / f"one_{mode}", mode, 0, 1)
        assert plot_single_run(tmp_path / f"one_{mode}").stat().st_size > 5000
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text(",".join(CSV_COLUMNS) + "\n")  # compiled, no generation yet
    assert plot_single_run(empty).exists()
    with pytest.raises(ConfigError, match="cannot read the metrics"):
        plot_single_run(tmp_path / "missing")


def test_a_metrics_csv_written_before_the_training_return_column_reads_and_continues_with_nan(tmp_path):
    """Runs recorded before 0.8.0 have no training_return: read, resumed (rewritten with the rows kept)
    and read again, their rows say NaN there and keep every other value; new rows keep theirs."""
    from pderl_jax.training.metrics import MetricsLog, blank_row, read_metric_columns, read_metrics

    rng = np.random.default_rng()
    old_columns = [c for c in CSV_COLUMNS if c != "training_return"]
    values = [{c: (i + 1 if c in ("generation", "frames", "synced") else float(rng.normal())) for c in old_columns}
              for i in range(2)]
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns)
        writer.writeheader()
        writer.writerows(values)
    assert np.isnan(read_metric_columns(tmp_path / "metrics.csv")["training_return"]).all()
    measured = float(rng.normal())
    with MetricsLog(tmp_path, read_metrics(tmp_path / "metrics.csv")) as log:
        log.write([blank_row(generation=3, frames=3, synced=0, training_return=measured)])
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == CSV_COLUMNS
    assert [math.isnan(r["training_return"]) for r in rows] == [True, True, False]
    assert rows[2]["training_return"] == pytest.approx(measured)
    for before, after in zip(values, rows):
        assert {c: after[c] for c in old_columns} == pytest.approx(before)
