"""Batched PAF grouping vs the same parse written as an OpenPose-demo-style loop (per image, limb and pair).

Both sides get the same rendered part maps and PAFs (several people per image, OpenPose's COCO-18 limbs) and
the same refined peaks (``find_peaks``); the loop then scores every candidate pair by sampling the PAF point by
point, assigns greedily per limb, joins people with a union-find over the tree limbs and merges across the
other limbs when two people share no part. Prints whether both found the same people, the largest coordinate
difference, the median times and the speed ratio.

    python benchmarks/decode_paf.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

from heatdeploy.runtime.decode_paf import decode_paf, find_peaks, tree_limbs
from heatdeploy.spec import OPENPOSE_COCO18_LIMBS, PafSpec

N, K, H, W = 8, 18, 46, 46  # OpenPose at 368x368, stride 8
PEOPLE = 4
TARGET_RATIO = 10.0
ROUNDS = 7
CFG = PafSpec()
# A standing person (heatmap px, relative to the nose), COCO-18 part order.
TEMPLATE = np.array([(0, 0), (0, 3), (-3, 3), (-4, 7), (-5, 11), (3, 3), (4, 7), (5, 11), (-2, 12), (-2, 18),
                     (-2, 24), (2, 12), (2, 18), (2, 24), (-1, -1), (1, -1), (-2, 0), (2, 0)], dtype=np.float64)


def render(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Part maps [N,K,h,w] and PAFs [N,38,h,w] of PEOPLE randomly placed people per image."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    parts = np.zeros((N, K, H, W))
    total = np.zeros((N, 38, H, W))
    count = np.zeros((N, 38, H, W))
    for n in range(N):
        for _ in range(PEOPLE):
            person = TEMPLATE * rng.uniform(0.8, 1.2) + rng.uniform([6, 3], [W - 6, H - 26])
            for k, (x, y) in enumerate(person):
                parts[n, k] = np.maximum(parts[n, k], np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2.0))
            for a, b, cx, cy in OPENPOSE_COCO18_LIMBS:
                d = person[b] - person[a]
                length = np.hypot(*d)
                u = d / length
                t = (xs - person[a, 0]) * u[0] + (ys - person[a, 1]) * u[1]
                perp = np.abs((xs - person[a, 0]) * u[1] - (ys - person[a, 1]) * u[0])
                on = (t >= -1) & (t <= length + 1) & (perp <= 1)
                total[n, cx] += on * u[0]
                total[n, cy] += on * u[1]
                count[n, cx] += on
                count[n, cy] += on
    return parts.astype(np.float32), (total / np.maximum(count, 1)).astype(np.float32)


def parse_loop(parts: np.ndarray, pafs: np.ndarray) -> list[list[tuple[float, np.ndarray, np.ndarray]]]:
    """Per image: people as (score, coords [K,2], found [K]), best first — one pair at a time."""
    xy, pscore, pvalid = find_peaks(parts, CFG.max_peaks, CFG.peak_threshold, CFG.pool_kernel)
    tree = tree_limbs(OPENPOSE_COCO18_LIMBS, K)
    t = np.linspace(0.0, 1.0, CFG.samples)
    out = []
    for n in range(parts.shape[0]):
        peaks = [[i for i in range(CFG.max_peaks) if pvalid[n, k, i]] for k in range(K)]
        accepted = []  # (limb, i, j, score)
        for limb, (a, b, cx, cy) in enumerate(OPENPOSE_COCO18_LIMBS):
            cands = []
            for i in peaks[a]:
                for j in peaks[b]:
                    pa, pb = xy[n, a, i].astype(np.float64), xy[n, b, j].astype(np.float64)
                    d = pb - pa
                    norm = float(np.hypot(*d))
                    if norm <= 1e-6:
                        continue
                    u = d / norm
                    dots = []
                    for s in t:
                        x = int(np.clip(np.rint(pa[0] + d[0] * s), 0, W - 1))
                        y = int(np.clip(np.rint(pa[1] + d[1] * s), 0, H - 1))
                        dots.append(pafs[n, cx, y, x] * u[0] + pafs[n, cy, y, x] * u[1])
                    dots_a = np.array(dots)
                    score = dots_a.mean() + min(0.5 * H / norm - 1.0, 0.0)
                    if (dots_a > CFG.min_alignment).mean() >= CFG.min_inliers and score > 0:
                        cands.append((-score, i, j))
            used_a, used_b = set(), set()
            for neg, i, j in sorted(cands):
                if i not in used_a and j not in used_b:
                    used_a.add(i)
                    used_b.add(j)
                    accepted.append((limb, i, j, -neg))
        root = {(k, i): (k, i) for k in range(K) for i in peaks[k]}

        def find(node: tuple[int, int], root: dict = root) -> tuple[int, int]:
            while root[node] != node:
                node = root[node]
            return node

        def node_id(node: tuple[int, int]) -> int:  # the batched side's id: part * P + peak
            return node[0] * CFG.max_peaks + node[1]

        def join(ra: tuple[int, int], rb: tuple[int, int], root: dict = root) -> None:  # smaller id is the root
            root[max(ra, rb, key=node_id)] = min(ra, rb, key=node_id)

        for limb, i, j, _ in accepted:
            if tree[limb]:
                a, b = OPENPOSE_COCO18_LIMBS[limb][:2]
                ra, rb = find((a, i)), find((b, j))
                if ra != rb:
                    join(ra, rb)
        for limb, i, j, _ in accepted:
            if not tree[limb]:
                a, b = OPENPOSE_COCO18_LIMBS[limb][:2]
                ra, rb = find((a, i)), find((b, j))
                parts_a = {node[0] for node in root if find(node) == ra}
                parts_b = {node[0] for node in root if find(node) == rb}
                if ra != rb and not parts_a & parts_b:
                    join(ra, rb)
        people = {}
        for node in root:
            people.setdefault(find(node), []).append(node)
        found = []
        for r, members in people.items():
            score = sum(float(pscore[n, k, i]) for k, i in members)
            links = [s for limb, i, j, s in accepted
                     if find((OPENPOSE_COCO18_LIMBS[limb][0], i)) == r == find((OPENPOSE_COCO18_LIMBS[limb][1], j))]
            mean = (score + sum(links)) / (len(members) + len(links))
            if len(members) >= CFG.min_parts and mean >= CFG.min_score:
                coords = np.zeros((K, 2), np.float32)
                present = np.zeros(K, bool)
                for k, i in members:
                    coords[k], present[k] = xy[n, k, i], True
                found.append((mean, coords, present))
        out.append(sorted(found, key=lambda p: -p[0])[:CFG.max_people])
    return out


def batched(parts: np.ndarray, pafs: np.ndarray) -> object:
    return decode_paf(parts, pafs, OPENPOSE_COCO18_LIMBS, max_people=CFG.max_people, max_peaks=CFG.max_peaks)


def main() -> int:
    parts, pafs = render(np.random.default_rng(0))
    fast = batched(parts, pafs)
    loop = parse_loop(parts, pafs)
    same, worst = True, 0.0
    for n in range(N):
        want = loop[n]
        got = int(fast.valid[n].sum())
        same &= got == len(want)
        for m, (score, coords, present) in enumerate(want[:got]):
            same &= bool(np.array_equal(fast.found[n, m], present))
            worst = max(worst, float(np.abs(fast.coords_hm[n, m][present] - coords[present]).max()),
                        abs(float(fast.scores[n, m]) - score))
    people = int(fast.valid.sum())
    print(f"parts [{N}, {K}, {H}, {W}], {PEOPLE} rendered people per image: {people} found, same people as the "
          f"loop: {same}, max |batched - loop| = {worst:.2e} (coords px / score)")
    t_fast, t_loop = [], []
    for _ in range(ROUNDS):  # interleaved, so load from other jobs hits both sides alike
        a = time.perf_counter()
        batched(parts, pafs)
        t_fast.append(time.perf_counter() - a)
        a = time.perf_counter()
        parse_loop(parts, pafs)
        t_loop.append(time.perf_counter() - a)
    f, lo = 1000 * float(np.median(t_fast)), 1000 * float(np.median(t_loop))
    print(f"PAF parse  batched {f:8.2f} ms   loop {lo:8.2f} ms   ratio {lo / f:6.1f}x   (median of {ROUNDS}, "
          "interleaved; both include the same peak finding)")
    if lo / f < TARGET_RATIO:
        print(f"note: ratio below the {TARGET_RATIO:.0f}x target")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
