"""The package's structure (tools/check_structure.py): no import cycle, training/ importing no analysis,
experiments or CLI, and no function over 60 lines; the checker itself finds each fault in a made-up package."""

import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import check_structure  # noqa: E402


def test_the_package_has_no_import_cycle_no_layer_violation_and_no_long_function():
    result = check_structure.report(ROOT)
    assert result["modules"] > 40
    assert result["import_cycles"] == [] and result["layer_cycles"] == []
    assert result["layer_violations"] == []
    assert result["long_functions"] == []
    assert check_structure.main(["--root", str(ROOT)]) == 0


def test_the_checker_finds_cycles_lazy_imports_layer_violations_and_long_functions(tmp_path, capsys):
    package = tmp_path / "pderl_jax"
    for folder in ("training", "analysis"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "training" / "loop.py").write_text("from pderl_jax.training import run_folder\n")
    (package / "training" / "run_folder.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                       "    from pderl_jax.training.loop import x\n")
    (package / "training" / "driver.py").write_text("def hook():\n    from pderl_jax.analysis import curves\n")
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (package / "analysis" / "curves.py").write_text("from ..training import driver\n\n\nclass Figure:\n"
                                                    + textwrap.indent(f"def draw(self):\n{body}", "    "))
    result = check_structure.report(tmp_path)
    assert result["import_cycles"] == [["pderl_jax.analysis.curves", "pderl_jax.training.driver"],  # a lazy import
                                       ["pderl_jax.training.loop", "pderl_jax.training.run_folder"]]  # TYPE_CHECKING
    assert result["layer_cycles"] == [["pderl_jax.analysis", "pderl_jax.training"]]
    assert result["layer_violations"] == ["pderl_jax.training.driver imports pderl_jax.analysis",  # its __init__ too
                                          "pderl_jax.training.driver imports pderl_jax.analysis.curves"]
    assert result["long_functions"] == [{"function": "pderl_jax.analysis.curves:Figure.draw", "lines": 61}]
    assert check_structure.main(["--root", str(tmp_path)]) == 1
    assert "functions over 60 lines: 1" in capsys.readouterr().out
