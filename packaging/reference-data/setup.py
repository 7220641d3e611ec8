"""heatdeploy-reference-data: the files are copied at build time from the repo's heatdeploy/models/{weights,data}.

They stay in git once (where the tests and the editable install read them). Build from a clone:
``pip wheel ./packaging/reference-data`` or ``pip install ./packaging/reference-data``. An sdist carries the
copied files, so a wheel built from it needs no repo.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
REPO_MODELS = HERE.parent.parent / "heatdeploy" / "models"
PACKAGE = "heatdeploy_refdata"
FOLDERS = ("weights", "data")


def _copy_into(package_dir: Path) -> None:
    for folder in FOLDERS:
        src = REPO_MODELS / folder
        if src.is_dir():
            dest = package_dir / folder
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif not (HERE / PACKAGE / folder).is_dir():  # an sdist has them in the package already
            raise SystemExit(f"{src}: not found; build heatdeploy-reference-data from a clone of the heatdeploy repo")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        local = HERE / PACKAGE
        dest = Path(self.build_lib) / PACKAGE
        if all((local / f).is_dir() for f in FOLDERS) and not REPO_MODELS.is_dir():  # built from the sdist
            for folder in FOLDERS:
                shutil.copytree(local / folder, dest / folder, dirs_exist_ok=True)
        else:
            _copy_into(dest)


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _copy_into(Path(base_dir) / PACKAGE)


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
