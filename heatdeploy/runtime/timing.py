"""Side-by-side latency: every candidate runs in every round, the order rotating, so a busy neighbour's noise
hits all of them alike and their ratios stay meaningful where absolute times do not.

The one interleaved timer behind the INT8 search, the deployment choice and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

ROUNDS = (5, 25)  # interleaved rounds: at least, at most
SECONDS = 4.0  # stop after this long once the minimum rounds are in


@dataclass
class Timing:
    """Median ms per call of each candidate, and ``paired_ms``: the first candidate's median times each one's
    median per-round ratio to it (robust to load that changes between rounds)."""

    median_ms: dict[str, float] = field(default_factory=dict)
    paired_ms: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    method: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"median_ms": self.median_ms, "paired_ms": self.paired_ms, "rounds": self.rounds,
                "method": self.method}


def interleaved_ms(runs: Mapping[str, Callable[[], object]], *, rounds: tuple[int, int] = ROUNDS,
                   seconds: float = SECONDS, warmup: int = 2, per_round: int = 1) -> Timing:
    """Time each zero-argument call ``per_round`` times per round, round-robin with a rotating start."""
    names = list(runs)
    if not names:
        return Timing(method="nothing to time")
    for n in names:
        for _ in range(warmup):
            runs[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(rounds[1]):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            call = runs[n]
            t0 = time.perf_counter()
            for _ in range(per_round):
                call()
            times[n].append((time.perf_counter() - t0) / per_round)
        if r + 1 >= rounds[0] and time.perf_counter() - start > seconds:
            break
    first = np.asarray(times[names[0]])
    base_ms = float(np.median(first)) * 1e3
    return Timing(median_ms={n: float(np.median(t)) * 1e3 for n, t in times.items()},
                  paired_ms={n: base_ms * float(np.median(np.asarray(t) / first)) for n, t in times.items()},
                  rounds=len(times[names[0]]),
                  method=f"interleaved, rotating order; median per-round ratio to {names[0]} x its median")


__all__ = ["Timing", "interleaved_ms"]
