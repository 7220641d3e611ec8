"""Parse the ``synthetic[:N]`` data argument (kept free of cv2/skimage imports)."""

from __future__ import annotations


def synthetic_count(text: str, default: int) -> int:
    """'synthetic' -> default; 'synthetic:N' -> N (N >= 1), else a ValueError naming the argument."""
    if ":" not in text:
        return default
    try:
        n = int(text.split(":", 1)[1])
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{text!r}: expected 'synthetic' or 'synthetic:N' with N >= 1")
    return n
