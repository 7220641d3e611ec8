"""The one root exception: every expected failure is a HeatdeployError carrying a one-line message.

The CLI turns a HeatdeployError into ``error: <message>`` and exit code 2 (bad input or usage); a gate that
fails is not an exception (exit 1); anything else is a bug (exit 3).
"""

from __future__ import annotations


class HeatdeployError(Exception):
    """An expected failure whose message already names the file and the fix, on one line."""
