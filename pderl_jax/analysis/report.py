"""Numbers and PNGs from an operator study and a run's metrics (paper Figures 1, 2, 5-9, 11)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np

from pderl_jax.analysis.curves import new_figure, save_figure
from pderl_jax.analysis.density import common_extent, density_grid, kl_divergence
from pderl_jax.analysis.operators import Behaviour, OperatorStudy


def visited_states(behaviour: Behaviour, i: int) -> np.ndarray:
    """The [n, 2] states actor i visited (valid steps only)."""
    return np.asarray(behaviour.states[i])[np.asarray(behaviour.valid[i], bool)]


def _ratio(child: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """child / parent fitness; undefined (NaN) where the parent's fitness is not positive."""
    return np.where(parent > 0, child / np.where(parent > 0, parent, 1.0), np.nan)


def summarise(study: OperatorStudy) -> dict:
    """Per-draw fitnesses, normalised fitness and KL divergences, with medians per operator."""
    study = _numpy(study)
    pop = study.population.returns
    p1, p2 = pop[study.crossover_parents[:, 0]], pop[study.crossover_parents[:, 1]]
    parent = pop[study.mutation_parents]
    draws = len(p1)
    kl = {name: [] for name in ("distilled_from_parent1", "distilled_from_parent2", "npoint_from_parent1",
                                "npoint_from_parent2", "proximal", "gaussian")}
    for d in range(draws):
        s1, s2 = (visited_states(study.population, p) for p in study.crossover_parents[d])
        for child, name in ((study.distilled, "distilled"), (study.npoint, "npoint")):
            states = visited_states(child, d)
            kl[f"{name}_from_parent1"].append(_safe_kl(s1, states))
            kl[f"{name}_from_parent2"].append(_safe_kl(s2, states))
        s = visited_states(study.population, study.mutation_parents[d])
        kl["proximal"].append(_safe_kl(s, visited_states(study.proximal, d)))
        kl["gaussian"].append(_safe_kl(s, visited_states(study.gaussian, d)))
    best_states = visited_states(study.population, int(study.sigma_parent))
    sweep = {
        "sigmas": study.sigmas.tolist(),
        "proximal_kl": [_safe_kl(best_states, visited_states(study.proximal_by_sigma, i))
                        for i in range(len(study.sigmas))],
        "gaussian_kl": [_safe_kl(best_states, visited_states(study.gaussian_by_sigma, i))
                        for i in range(len(study.sigmas))],
        "proximal_fitness": study.proximal_by_sigma.returns.tolist(),
        "gaussian_fitness": study.gaussian_by_sigma.returns.tolist(),
        "parent_fitness": float(pop[int(study.sigma_parent)]),
    }
    normalised = {
        "parent2": _ratio(p2, p1), "distilled": _ratio(study.distilled.returns, p1),
        "npoint": _ratio(study.npoint.returns, p1),
        "proximal": _ratio(study.proximal.returns, parent), "gaussian": _ratio(study.gaussian.returns, parent),
    }
    median = lambda x: float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")
    return {
        "draws": draws,
        "population_fitness": pop.tolist(),
        "crossover": {"parent1_fitness": p1.tolist(), "parent2_fitness": p2.tolist(),
                      "distilled_fitness": study.distilled.returns.tolist(),
                      "npoint_fitness": study.npoint.returns.tolist()},
        "mutation": {"parent_fitness": parent.tolist(), "proximal_fitness": study.proximal.returns.tolist(),
                     "gaussian_fitness": study.gaussian.returns.tolist()},
        "normalised_fitness": {name: values.tolist() for name, values in normalised.items()},
        "median_normalised_fitness": {name: median(values) for name, values in normalised.items()},
        "kl": kl,
        "median_kl": {name: median(np.asarray(values)) for name, values in kl.items()},
        "kl_by_magnitude": sweep,
    }


def write_figures(study: OperatorStudy, summary: dict, out_dir: Path) -> list[Path]:
    """The Figure 1/2/5/6/7/8/9-style PNGs; returns their paths."""
    study = _numpy(study)
    draws, n = summary["draws"], summary["normalised_fitness"]
    return [
        _fitness_bars(out_dir / "crossover_fitness.png", draws, [np.ones(draws), n["parent2"], n["distilled"],
                      n["npoint"]], ["parent 1", "parent 2", "distillation child", "n-point child"],
                      "Crossover offspring fitness, normalised by parent 1 (paper Figure 5)"),
        _fitness_bars(out_dir / "mutation_fitness.png", draws, [np.ones(draws), n["proximal"], n["gaussian"]],
                      ["parent", "proximal child", "Gaussian child"],
                      "Mutation offspring fitness, normalised by the parent (paper Figure 7)"),
        _crossover_states(study, summary, out_dir / "crossover_states.png"),
        _mutation_states(study, summary, out_dir / "mutation_states.png"),
        _kl_by_magnitude(summary["kl_by_magnitude"], out_dir / "kl_by_magnitude.png"),
    ]


def _fitness_bars(path: Path, draws: int, groups, labels, title: str) -> Path:
    """Offspring fitness per draw, normalised by (the first) parent, one bar per group."""
    crossover = path.name.startswith("crossover")
    fig, (ax,) = new_figure(10, 3.6)
    width = 0.8 / len(groups)
    x = np.arange(draws)
    for i, (values, label) in enumerate(zip(groups, labels)):
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, np.nan_to_num(values), width, label=label)
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_xticks(x, [f"{'pair' if crossover else 'parent'} {i + 1}" for i in x])
    ax.set_ylabel("fitness / parent" + (" 1" if crossover else ""))
    ax.set_title(title)
    ax.legend(ncol=len(groups), fontsize=8)
    return save_figure(fig, path)


def _state_contours(path: Path, parents, parent_labels, children, titles, suptitle: str) -> Path:
    """One panel per child: contours of the parents' and the child's visited states."""
    colours = ["tab:blue", "tab:green"][:len(parents)] + ["tab:red"]
    fig, axes = new_figure(10, 4.2, ncols=2)
    for ax, child, title in zip(axes, children, titles):
        samples = [*parents, child]
        extent = common_extent(*samples)
        for states, colour in zip(samples, colours):
            if len(states) >= 4:
                gx, gy, density = density_grid(states, extent)
                ax.contour(gx, gy, density, levels=6, colors=colour, linewidths=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("state dim 0")
        ax.set_ylabel("state dim 1")
        for colour, label in zip(colours, [*parent_labels, "child"]):
            ax.plot([], [], color=colour, label=label)
        ax.legend(fontsize=7)
    fig.suptitle(suptitle)
    return save_figure(fig, path)


def _crossover_states(study: OperatorStudy, summary: dict, path: Path) -> Path:
    """The pair with the fittest parent 1: its parents' and both children's visited states."""
    kl = summary["kl"]
    d = int(np.argmax(summary["crossover"]["parent1_fitness"]))
    return _state_contours(
        path, [visited_states(study.population, p) for p in study.crossover_parents[d]], ["parent 1", "parent 2"],
        [visited_states(study.distilled, d), visited_states(study.npoint, d)],
        [f"Q-filtered distillation (KL p1||c {kl['distilled_from_parent1'][d]:.2f}, "
         f"p2||c {kl['distilled_from_parent2'][d]:.2f})",
         f"n-point (KL p1||c {kl['npoint_from_parent1'][d]:.2f}, p2||c {kl['npoint_from_parent2'][d]:.2f})"],
        f"State visitation of parents and crossover children, pair {d + 1} (paper Figures 1 and 6)")


def _mutation_states(study: OperatorStudy, summary: dict, path: Path) -> Path:
    """The fittest parent: its and both mutated children's visited states."""
    kl = summary["kl"]
    d = int(np.argmax(summary["mutation"]["parent_fitness"]))
    return _state_contours(
        path, [visited_states(study.population, study.mutation_parents[d])], ["parent"],
        [visited_states(study.proximal, d), visited_states(study.gaussian, d)],
        [f"proximal mutation (KL {kl['proximal'][d]:.2f})", f"Gaussian mutation (KL {kl['gaussian'][d]:.2f})"],
        f"State visitation of a parent and its mutated children, parent {d + 1} (paper Figures 2 and 8)")


def _kl_by_magnitude(sweep: dict, path: Path) -> Path:
    """KL and child fitness against the mutation magnitude (Figure 9)."""
    fig, axes = new_figure(10, 3.8, ncols=2)
    axes[0].plot(sweep["sigmas"], sweep["proximal_kl"], "o-", label="proximal (sigma)")
    axes[0].plot(sweep["sigmas"], sweep["gaussian_kl"], "s-", label="Gaussian (strength)")
    axes[0].set_ylabel("KL(parent || child)")
    axes[1].plot(sweep["sigmas"], sweep["proximal_fitness"], "o-", label="proximal")
    axes[1].plot(sweep["sigmas"], sweep["gaussian_fitness"], "s-", label="Gaussian")
    axes[1].axhline(sweep["parent_fitness"], color="black", lw=0.6, label="parent")
    axes[1].set_ylabel("child fitness")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("mutation magnitude")
        ax.legend(fontsize=8)
    fig.suptitle("Behaviour change against mutation magnitude (paper Figure 9)")
    return save_figure(fig, path)


def plot_selection_rates(metrics_csv: Path, out_path: Path) -> Path | None:
    """The RL actor's elite / selected / discarded rates over generations (Figure 11, Table 2)."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("elite_rate") not in (None, "", "nan")]
    if not rows:
        return None
    generations = [int(r["generation"]) for r in rows]
    fig, (ax,) = new_figure(7, 3.6)
    for column, label in (("elite_rate", "elite"), ("selected_rate", "selected"), ("discarded_rate", "discarded")):
        ax.plot(generations, [float(r[column]) for r in rows], label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel("share of RL-actor syncs")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Selection of the synced RL actor (paper Figure 11, Table 2)")
    ax.legend()
    return save_figure(fig, out_path)


def write_summary(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, allow_nan=True))


def _safe_kl(p_states: np.ndarray, q_states: np.ndarray) -> float:
    try:
        return kl_divergence(p_states, q_states)
    except (ValueError, np.linalg.LinAlgError):
        return float("nan")


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)
