"""The one root exception: every expected failure is a HeatdeployError carrying a one-line message.

The CLI turns a HeatdeployError into ``error: <message>`` and exit code 2 (bad input or usage); a gate that
fails is not an exception (exit 1); anything else is a bug (exit 3).
"""

from __future__ import annotations


class HeatdeployError(Exception):
    """An expected failure whose message already names the file and the fix, on one line."""


class ModelOutputError(HeatdeployError, ValueError):
    """The engine's outputs do not fit the spec (count, names, sizes, layout, channels): fix the spec."""


class InputError(HeatdeployError, ValueError):
    """A call's own input does not fit (no images, bad boxes, crop without boxes): fix the call."""
