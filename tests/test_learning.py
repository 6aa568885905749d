"""Learning check (slow, excluded from the default run): PDERL improves on brax HalfCheetah."""

import csv

import pytest

from pderl_jax.cli import main


@pytest.mark.slow
def test_champion_return_rises_on_halfcheetah(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--env", "halfcheetah", "--backend", "brax", "--frames", "110000", "--seed", "0",
                 "--out", str(out), "--no-progress"]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    champion = [float(r["champion_test"]) for r in rows]
    population = [float(r["pop_mean"]) for r in rows]
    assert len(rows) >= 10
    # individual test returns are noisy; the best of the last three generations and the
    # population mean must both be clearly above generation 1
    assert max(champion[-3:]) > champion[0] + 150, champion
    assert max(population[-3:]) > population[0] + 150, population
