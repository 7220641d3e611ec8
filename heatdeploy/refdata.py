"""Where the reference weights and the evaluation data are: the one locator for them.

They are not in the ``heatdeploy`` wheel (15.7 MB of torch weights and 5.7 MB of images are useless on a device
with the runtime alone). They come from the source tree (a clone, or ``pip install -e``), else from the separate
``heatdeploy-reference-data`` distribution (package ``heatdeploy_refdata``, built from
``packaging/reference-data/`` of this repo). Paths are relative to ``heatdeploy/models/``: ``weights/reference.pt``,
``data/eval``, ...
"""

from __future__ import annotations

from pathlib import Path

from heatdeploy.errors import HeatdeployError

SOURCE_DIR = Path(__file__).parent / "models"  # the folders in git; also where training writes by default
DIST = "heatdeploy-reference-data"
PACKAGE = "heatdeploy_refdata"
INSTALL = (f"pip install {DIST} (built from the heatdeploy repo: pip install ./packaging/reference-data; "
           "README, 'Install')")


class ReferenceDataMissing(HeatdeployError, FileNotFoundError):
    """The reference weights / evaluation data are not installed; the message names the install."""


def reference_data(rel: str) -> Path:
    """``rel`` (e.g. ``weights/reference.pt``, ``data/eval``) from the source tree, else the data distribution."""
    local = SOURCE_DIR / rel
    if local.exists():
        return local
    try:
        from importlib.resources import files

        installed = Path(str(files(PACKAGE) / rel))
    except (ImportError, TypeError):  # not installed (ModuleNotFoundError is an ImportError)
        installed = None
    if installed is not None and installed.exists():
        return installed
    raise ReferenceDataMissing(f"{rel}: heatdeploy's reference weights and evaluation data are not installed "
                               f"(not in the heatdeploy wheel); {INSTALL}")
