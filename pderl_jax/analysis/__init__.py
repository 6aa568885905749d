"""Operator diagnostics (paper Figures 1, 2 and 5-9) and selection-rate plots (Figure 11)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from pderl_jax.analysis.density import density_grid, fit_kde, kl_divergence
from pderl_jax.analysis.operators import Behaviour, OperatorStudy, behaviour, study_operators
from pderl_jax.analysis.report import plot_selection_rates, summarise, write_figures, write_summary
from pderl_jax.training.driver import RunHooks
from pderl_jax.training.metrics import METRICS_FILE

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


def analyze_during_run(trainer, state, out_dir: Path, generation: int, draws: int, print_fn) -> None:
    """The operator study of a running population, on its own random stream, into
    `out_dir/analysis/gen_<generation>`."""
    key = jax.random.fold_in(jax.random.key(trainer.config.seed + 1_000_003), generation)
    summary = analyze(trainer, key, state.evolution.population, state.learner.critic,
                      out_dir / "analysis" / f"gen_{generation:05d}", draws=draws,
                      metrics_csv=out_dir / METRICS_FILE)
    print_fn(f"generation {generation}: " + format_summary(summary))


def plot_learning_curve(out_dir: Path, print_fn) -> None:
    """`learning_curve.png` of a finished run; a figure never costs the run its results."""
    from pderl_jax.analysis.curves import plot_single_run

    try:
        plot_single_run(out_dir)
    except Exception as error:  # noqa: BLE001
        print_fn(f"warning: learning_curve.png not drawn ({error})")


def run_hooks() -> RunHooks:
    """What the CLI adds to a run (`train(..., hooks=run_hooks())`): the operator study every
    `--analyze-every` generations and the learning-curve figure at the end."""
    return RunHooks(analyze=analyze_during_run, finished=plot_learning_curve)


__all__ = ["Behaviour", "OperatorStudy", "analyze", "behaviour", "density_grid", "fit_kde", "format_summary",
           "kl_divergence", "plot_learning_curve", "plot_selection_rates", "run_hooks", "analyze_during_run", "study_operators", "summarise", "write_figures"]
