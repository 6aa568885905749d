"""Operator diagnostics (paper Figures 1, 2 and 5-9) and selection-rate plots (Figure 11)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from pderl_jax.analysis.density import density_grid, fit_kde, kl_divergence
from pderl_jax.analysis.operators import Behaviour, OperatorStudy, behaviour, study_operators
from pderl_jax.analysis.report import plot_selection_rates, summarise, write_figures, write_summary

DEFAULT_SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0)


def analyze(trainer, key: jax.Array, population, critic: dict, out_dir: Path, draws: int = 10,
            episodes: int = 3, sigmas=DEFAULT_SIGMAS, metrics_csv: Path | None = None) -> dict:
    """The operator study of a `Population`: `analysis.json` and the PNGs in `out_dir`; returns the summary."""
    if draws < 1 or episodes < 1:
        raise ValueError("draws and episodes must be at least 1")
    if trainer.config.evolution.pop_size < 2:
        raise ValueError("the operator study needs a population of at least 2 members")
    study_fn = jax.jit(study_operators, static_argnums=(0, 4, 5))
    study = study_fn(trainer, key, population, critic, draws, episodes, jnp.asarray(sigmas, jnp.float32))
    summary = summarise(study)
    out_dir = Path(out_dir)
    figures = write_figures(study, summary, out_dir)
    if metrics_csv is not None and Path(metrics_csv).exists():
        rates = plot_selection_rates(Path(metrics_csv), out_dir / "selection_rates.png")
        if rates is not None:
            figures.append(rates)
    summary["figures"] = [str(p) for p in figures]
    write_summary(summary, out_dir / "analysis.json")
    return summary


def format_summary(summary: dict) -> str:
    m, k = summary["median_normalised_fitness"], summary["median_kl"]
    return "\n".join([
        f"operator study over {summary['draws']} parent draws (median child fitness / parent fitness; median KL):",
        f"  distillation crossover {m['distilled']:.3f} (KL from parent 1 {k['distilled_from_parent1']:.3f})",
        f"  n-point crossover      {m['npoint']:.3f} (KL from parent 1 {k['npoint_from_parent1']:.3f})",
        f"  proximal mutation      {m['proximal']:.3f} (KL {k['proximal']:.3f})",
        f"  Gaussian mutation      {m['gaussian']:.3f} (KL {k['gaussian']:.3f})",
    ])


__all__ = ["Behaviour", "OperatorStudy", "analyze", "behaviour", "density_grid", "fit_kde", "format_summary",
           "kl_divergence", "plot_selection_rates", "study_operators", "summarise", "write_figures"]
