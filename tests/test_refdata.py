"""The one locator for the reference weights and evaluation data (heatdeploy/refdata.py).

They are not in the heatdeploy wheel: the source tree first (a clone, ``pip install -e``), else the
heatdeploy-reference-data distribution (package ``heatdeploy_refdata``), else a one-line error naming its install.
Runs in CI's runtime-only venv too (stdlib only, no torch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from heatdeploy import refdata
from heatdeploy.errors import HeatdeployError


def _fake_dist(root: Path, name: str = "heatdeploy_refdata") -> Path:
    pkg = root / name
    (pkg / "weights").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "weights" / "reference.pt").write_bytes(b"x")
    return pkg


@pytest.fixture
def no_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source tree without the files (what a wheel install is) and no data distribution."""
    monkeypatch.setattr(refdata, "SOURCE_DIR", tmp_path / "site-packages" / "heatdeploy" / "models")
    monkeypatch.setattr(refdata, "PACKAGE", "heatdeploy_refdata_not_installed")


def test_the_source_tree_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "models"
    (src / "data" / "eval").mkdir(parents=True)
    monkeypatch.setattr(refdata, "SOURCE_DIR", src)
    monkeypatch.syspath_prepend(str(tmp_path / "dist"))
    _fake_dist(tmp_path / "dist")
    assert refdata.reference_data("data/eval") == src / "data" / "eval"


def test_else_the_installed_data_distribution(no_source: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _fake_dist(tmp_path / "dist", "heatdeploy_refdata_fake")
    monkeypatch.setattr(refdata, "PACKAGE", "heatdeploy_refdata_fake")
    monkeypatch.syspath_prepend(str(tmp_path / "dist"))
    monkeypatch.delitem(sys.modules, "heatdeploy_refdata_fake", raising=False)
    assert refdata.reference_data("weights/reference.pt").resolve() == (pkg / "weights" / "reference.pt").resolve()


def test_else_one_line_naming_the_install(no_source: None) -> None:
    with pytest.raises(HeatdeployError) as exc:
        refdata.reference_data("weights/reference.pt")
    msg = str(exc.value)
    assert isinstance(exc.value, FileNotFoundError) and "\n" not in msg
    assert msg.startswith("weights/reference.pt: ") and "pip install heatdeploy-reference-data" in msg


def test_the_shipped_split_is_looked_up_when_read(no_source: None) -> None:
    from heatdeploy.models import evalset  # imports without the data: only reading EVAL_DIR needs it

    with pytest.raises(refdata.ReferenceDataMissing):
        _ = evalset.EVAL_DIR
    with pytest.raises(AttributeError):
        _ = evalset.NO_SUCH_NAME


def test_eval_without_the_data_is_one_error_line(no_source: None, runtime_bundle: Path, cli_error_line) -> None:
    line = cli_error_line("eval", runtime_bundle)
    assert "pip install heatdeploy-reference-data" in line


def test_the_wheel_leaves_the_data_out() -> None:
    """pyproject's package-data names no weights or evaluation data (they would put 21 MB in the wheel)."""
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml next to the tests (CI's runtime-only copy checks the built wheel instead)")
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    assert not [g for g in setuptools["package-data"]["heatdeploy"] if g.startswith(("models/weights", "models/data"))]
    assert {"models/weights/*", "models/data/**/*"} <= set(setuptools["exclude-package-data"]["heatdeploy"])
