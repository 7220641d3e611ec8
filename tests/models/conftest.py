"""Shared fixtures for the model tests."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def no_fetch_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any subprocess (pip, npm) fails the test: a cached file that matches must be used as it is."""
    def no_client(*a: object, **k: object) -> None:
        raise AssertionError("the registry client must not run when the cached file matches")

    monkeypatch.setattr(subprocess, "run", no_client)
