"""Bottom-up decoding with part-affinity fields (OpenPose, tf-pose, trt_pose): part peaks grouped into people.

A bottom-up model finds every part of every person in one pass and says, with a 2-D vector field per limb,
which part peaks belong together. The parse follows OpenPose's and trt_pose's reference:

1. peaks: local maxima of each part map (max-filter NMS) at or above a threshold, the best P per part;
2. sub-pixel refinement: the weighted mean of the 3x3 window around each peak;
3. limb scores: for each limb and each candidate (peak of part a, peak of part b), the PAF line integral -
   the mean over S sampled points of ``PAF . unit(b - a)`` - plus OpenPose's distance prior
   ``min(0, h / (2 |b - a|) - 1)``; a pair needs ``min_inliers`` of its samples above ``min_alignment`` and a
   positive score;
4. assignment per limb: greedy by score, each peak joined once per limb (OpenPose, trt_pose);
5. skeletons: connected components of the accepted limbs over a spanning tree of the part graph
   (:func:`tree_limbs`), so a person holds at most one peak per part; the limbs that would close a cycle
   (COCO-18's ear-shoulder pair) then join two people only when they share no part (OpenPose's merge), which
   mends a person split by a missing tree part;
6. people: components with ``min_parts`` parts whose mean (part + limb) score reaches ``min_score``, best
   first, in ``max_people`` slots.

Everything is numpy over the whole batch with no Python loop over images, parts, limbs or peaks; the greedy
assignment and the component labelling loop over rounds (at most P and K of them), each vectorised.
Coordinates are ``(x, y)`` in heatmap pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from heatdeploy.errors import InputError
from heatdeploy.runtime.decode_centers import local_peaks


@dataclass
class People:
    """People decoded from one batch; M slots per image, valid ones first, best score first."""

    coords_hm: np.ndarray  # [N,M,K,2] float32 (x, y) heatmap px; 0 where the part was not found
    keypoint_scores: np.ndarray  # [N,M,K] float32 part-map peak value, 0 where not found
    found: np.ndarray  # [N,M,K] bool
    scores: np.ndarray  # [N,M] float32 mean of the person's part and limb scores, 0 for empty slots
    valid: np.ndarray  # [N,M] bool


@lru_cache(maxsize=16)
def tree_limbs(limbs: tuple[tuple[int, int, int, int], ...], num_parts: int) -> np.ndarray:
    """bool ``[L]``: limbs that join two parts not yet connected by earlier limbs (a spanning forest).

    Table order decides, as in OpenPose, whose COCO-18 table lists the tree from the neck first and its two
    ear-shoulder links last. The other limbs only join people in :func:`_merge_redundant`. Runs once per limb
    table (cached), over the table's entries, not over data.
    """
    root = list(range(num_parts))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    keep = np.zeros(len(limbs), dtype=bool)
    for i, (a, b, _, _) in enumerate(limbs):
        ra, rb = find(a), find(b)
        if ra != rb:
            root[rb] = ra
            keep[i] = True
    keep.setflags(write=False)
    return keep


def find_peaks(parts: np.ndarray, max_peaks: int, threshold: float, kernel: int = 3
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Part maps ``[N,K,h,w]`` -> refined peaks (x, y) ``[N,K,P,2]``, their values ``[N,K,P]``, valid ``[N,K,P]``.

    Peaks are best first per map (ties in raster order); slots past a map's peaks are padding (valid False).
    """
    hm = np.asarray(parts, dtype=np.float32)
    n, k, h, w = hm.shape
    maps = hm.reshape(n * k, h, w)
    peaks = local_peaks(maps, kernel) & (maps >= threshold)
    mi, flat = np.nonzero(peaks.reshape(n * k, h * w))
    vals = maps.reshape(n * k, h * w)[mi, flat]
    order = np.lexsort((flat, -vals, mi))  # by map, then score descending, then raster order
    mi, flat, vals = mi[order], flat[order], vals[order]
    rank = np.arange(mi.size) - np.searchsorted(mi, mi, side="left")
    keep = rank < max_peaks
    xy = np.zeros((n * k, max_peaks, 2), dtype=np.int64)
    scores = np.zeros((n * k, max_peaks), dtype=np.float32)
    valid = np.zeros((n * k, max_peaks), dtype=bool)
    xy[mi[keep], rank[keep]] = np.stack([flat[keep] % w, flat[keep] // w], axis=-1)
    scores[mi[keep], rank[keep]] = vals[keep]
    valid[mi[keep], rank[keep]] = True
    off = np.arange(-1, 2)
    cols = xy[:, :, 0, None] + off  # [NK,P,3]
    rows = xy[:, :, 1, None] + off
    inside = ((cols >= 0) & (cols < w))[:, :, None, :] & ((rows >= 0) & (rows < h))[:, :, :, None]
    m = np.arange(n * k)[:, None, None, None]
    win = maps[m, np.clip(rows, 0, h - 1)[..., :, None], np.clip(cols, 0, w - 1)[..., None, :]]  # [NK,P,3,3]
    win = np.where(inside & (win > 0), win, 0.0).astype(np.float64)
    total = win.sum(axis=(2, 3))
    safe = np.where(total > 0, total, 1.0)
    mx = (win.sum(axis=2) * cols).sum(axis=-1) / safe
    my = (win.sum(axis=3) * rows).sum(axis=-1) / safe
    refined = np.where((total > 0)[..., None], np.stack([mx, my], axis=-1), xy.astype(np.float64))
    return (refined.reshape(n, k, max_peaks, 2).astype(np.float32), scores.reshape(n, k, max_peaks),
            valid.reshape(n, k, max_peaks))


def limb_scores(pafs: np.ndarray, a_xy: np.ndarray, b_xy: np.ndarray, ok: np.ndarray, cx: np.ndarray,
                cy: np.ndarray, samples: int, min_alignment: float, min_inliers: float) -> np.ndarray:
    """PAF line-integral score ``[N,L,P,P]`` of every (a, b) peak pair per limb; -inf where not a limb.

    ``a_xy`` / ``b_xy`` ``[N,L,P,2]`` are the peaks of each limb's two parts, ``ok`` ``[N,L,P,P]`` where both
    are real peaks, ``cx`` / ``cy`` ``[L]`` each limb's PAF channels in ``pafs [N,C,h,w]``.
    """
    n, _, h, w = pafs.shape
    a = a_xy.astype(np.float64)[:, :, :, None, None, :]  # [N,L,P,1,1,2]
    d = (b_xy.astype(np.float64)[:, :, None, :, :] - a_xy.astype(np.float64)[:, :, :, None, :])  # [N,L,P,P,2]
    t = np.linspace(0.0, 1.0, samples)[:, None]  # [S,1]
    pts = a + d[:, :, :, :, None, :] * t  # [N,L,P,P,S,2]
    ix = np.clip(np.rint(pts[..., 0]), 0, w - 1).astype(np.intp)
    iy = np.clip(np.rint(pts[..., 1]), 0, h - 1).astype(np.intp)
    ni = np.arange(n)[:, None, None, None, None]
    vx = pafs[ni, cx[None, :, None, None, None], iy, ix]
    vy = pafs[ni, cy[None, :, None, None, None], iy, ix]
    norm = np.sqrt((d * d).sum(axis=-1))  # [N,L,P,P]
    safe = np.where(norm > 1e-6, norm, 1.0)
    dot = (vx * (d[..., 0] / safe)[..., None] + vy * (d[..., 1] / safe)[..., None])  # [N,L,P,P,S]
    prior = np.minimum(0.5 * h / safe - 1.0, 0.0)
    score = dot.mean(axis=-1) + prior
    inliers = (dot > min_alignment).mean(axis=-1)
    keep = ok & (norm > 1e-6) & (inliers >= min_inliers) & (score > 0)
    return np.where(keep, score, -np.inf)


def assign_greedy(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per limb, take pairs best score first, each peak at most once: partner ``[N,L,P]`` (-1: none) and score.

    One round per accepted pair count (at most P), each over every image and limb at once.
    """
    n, lcount, p, _ = score.shape
    s = score.reshape(n * lcount, p, p).copy()
    partner = np.full((n * lcount, p), -1, dtype=np.intp)
    link = np.zeros((n * lcount, p), dtype=np.float64)
    for _ in range(p):
        flat = s.reshape(n * lcount, p * p)
        best = flat.argmax(axis=1)
        val = flat[np.arange(flat.shape[0]), best]
        rows = np.flatnonzero(val > -np.inf)
        if rows.size == 0:
            break
        ia, ib = np.divmod(best[rows], p)
        partner[rows, ia] = ib
        link[rows, ia] = val[rows]
        s[rows, ia, :] = -np.inf
        s[rows, :, ib] = -np.inf
    return partner.reshape(n, lcount, p), link.reshape(n, lcount, p)


def _edges(partner: np.ndarray, pa: np.ndarray, pb: np.ndarray, p: int, use: np.ndarray,
           with_index: bool = False) -> tuple[np.ndarray, ...]:
    """Accepted pairs of the limbs in ``use`` as node ids: image ``[E]``, node a ``[E]``, node b ``[E]``."""
    en, el, ei = np.nonzero((partner >= 0) & use[None, :, None])
    ea = pa[el] * p + ei
    eb = pb[el] * p + partner[en, el, ei]
    return (en, ea, eb, el, ei) if with_index else (en, ea, eb)


def _components(n: int, nodes: int, en: np.ndarray, ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """Label propagation: ``[N, nodes]`` smallest node id of each node's component (one hop per round)."""
    labels = np.broadcast_to(np.arange(nodes), (n, nodes)).copy()
    for _ in range(nodes):
        low = np.minimum(labels[en, ea], labels[en, eb])
        new = labels.copy()
        np.minimum.at(new, (en, ea), low)
        np.minimum.at(new, (en, eb), low)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _merge_redundant(labels: np.ndarray, partner: np.ndarray, pa: np.ndarray, pb: np.ndarray, p: int, k: int,
                     node_ok: np.ndarray, redundant: np.ndarray) -> np.ndarray:
    """Join two people by a limb outside the tree when they share no part (OpenPose's merge rule).

    A person whose tree link is missing (an occluded neck or ear) is split in two; a redundant limb between
    the halves puts them back together. One pass per redundant limb, vectorised over images and pairs.
    """
    n, nodes = labels.shape
    for limb in np.flatnonzero(redundant):
        en, ea, eb = _edges(partner, pa, pb, p, np.arange(redundant.size) == limb)
        if en.size == 0:
            continue
        vn, vnode = np.nonzero(node_ok)
        occupied = np.zeros((n, nodes, k), dtype=bool)
        occupied[vn, labels[vn, vnode], vnode // p] = True
        ca, cb = labels[en, ea], labels[en, eb]
        join = (ca != cb) & ~(occupied[en, ca] & occupied[en, cb]).any(axis=-1)
        if not join.any():
            continue
        remap = np.broadcast_to(np.arange(nodes), (n, nodes)).copy()
        remap[en[join], np.maximum(ca, cb)[join]] = np.minimum(ca, cb)[join]
        for _ in range(nodes):  # chains (x -> y -> z) settle in a few rounds
            new = np.take_along_axis(remap, labels, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
    return labels


def decode_paf(parts: np.ndarray, pafs: np.ndarray, limbs: tuple[tuple[int, int, int, int], ...], *,
               max_people: int = 20, peak_threshold: float = 0.1, pool_kernel: int = 3, max_peaks: int = 24,
               samples: int = 10, min_alignment: float = 0.05, min_inliers: float = 0.8, min_parts: int = 3,
               min_score: float = 0.2) -> People:
    """Part maps ``[N,K,h,w]`` (probabilities) + PAFs ``[N,C,h,w]`` -> up to ``max_people`` people per image.

    ``limbs`` are (part a, part b, PAF x channel, PAF y channel) with channels indexing ``pafs``.
    """
    hm = np.asarray(parts, dtype=np.float32)
    pf = np.asarray(pafs, dtype=np.float32)
    if hm.ndim != 4 or pf.ndim != 4 or pf.shape[0] != hm.shape[0] or pf.shape[2:] != hm.shape[2:]:
        raise InputError(f"decode_paf: expected parts [N,K,h,w] and pafs [N,C,h,w] of one size, got {hm.shape} "
                         f"and {pf.shape}")
    table = np.asarray(limbs, dtype=np.intp).reshape(-1, 4)
    n, k = hm.shape[:2]
    if table.size and (table[:, :2].max() >= k or table[:, 2:].max() >= pf.shape[1]):
        raise InputError(f"decode_paf: limbs name part {table[:, :2].max()} / PAF channel {table[:, 2:].max()} "
                         f"but the maps have {k} parts and {pf.shape[1]} PAF channels")
    xy, pscore, pvalid = find_peaks(hm, max_peaks, peak_threshold, pool_kernel)
    # Peaks come best first, valid ones first: keep only as many slots as the busiest part map needs, so the
    # pair arrays below are [P_used^2], not [max_peaks^2].
    p = max(int(pvalid.sum(axis=2).max(initial=0)), 1)
    xy, pscore, pvalid = xy[:, :, :p], pscore[:, :, :p], pvalid[:, :, :p]
    pa, pb = table[:, 0], table[:, 1]
    ok = pvalid[:, pa, :, None] & pvalid[:, pb, None, :]  # [N,L,P,P]
    score = limb_scores(pf, xy[:, pa], xy[:, pb], ok, table[:, 2], table[:, 3], samples, min_alignment,
                        min_inliers)
    partner, link = assign_greedy(score)

    # Connected components over the tree limbs: node id = part * P + peak, label = smallest id reached.
    tree = tree_limbs(tuple(map(tuple, table.tolist())), k)
    node_ok = pvalid.reshape(n, k * p)
    labels = _components(n, k * p, *_edges(partner, pa, pb, p, tree))
    labels = _merge_redundant(labels, partner, pa, pb, p, k, node_ok, ~tree)

    # Person score: mean of its parts' peak values and of the scores of the limbs inside it.
    size = n * k * p
    flat = (np.arange(n)[:, None] * (k * p) + labels)[node_ok]
    parts_in = np.bincount(flat, minlength=size)
    total = np.bincount(flat, weights=pscore.reshape(n, k * p)[node_ok], minlength=size)
    en, ea, eb, el, ei = _edges(partner, pa, pb, p, np.ones(len(table), dtype=bool), with_index=True)
    inside = labels[en, ea] == labels[en, eb]
    edge_comp = (en * (k * p) + labels[en, ea])[inside]
    limbs_in = np.bincount(edge_comp, minlength=size)
    total += np.bincount(edge_comp, weights=link[en, el, ei][inside], minlength=size)
    mean = total / np.maximum(parts_in + limbs_in, 1)
    is_root = (labels == np.arange(k * p)) & node_ok
    good = is_root.reshape(-1) & (parts_in >= min_parts) & (mean >= min_score)
    comp_score = np.where(good, mean, -np.inf).reshape(n, k * p)

    m = max_people
    order = np.argsort(-comp_score, axis=1, kind="stable")[:, :m]  # [N,<=M] root ids, best first
    top = np.take_along_axis(comp_score, order, axis=1)
    if order.shape[1] < m:  # fewer nodes than slots: pad
        pad = m - order.shape[1]
        order = np.pad(order, ((0, 0), (0, pad)))
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
    valid = top > -np.inf
    slot_of = np.full((n, k * p), -1, dtype=np.intp)
    rn, rm = np.nonzero(valid)
    slot_of[rn, order[rn, rm]] = rm

    slot = np.where(node_ok, np.take_along_axis(slot_of, labels, axis=1), -1)  # [N, K*P]
    sn, snode = np.nonzero(slot >= 0)
    sk = snode // p
    coords = np.zeros((n, m, k, 2), dtype=np.float32)
    kscore = np.zeros((n, m, k), dtype=np.float32)
    found = np.zeros((n, m, k), dtype=bool)
    coords[sn, slot[sn, snode], sk] = xy.reshape(n, k * p, 2)[sn, snode]
    kscore[sn, slot[sn, snode], sk] = pscore.reshape(n, k * p)[sn, snode]
    found[sn, slot[sn, snode], sk] = True
    return People(coords_hm=coords, keypoint_scores=kscore, found=found,
                  scores=np.where(valid, top, 0.0).astype(np.float32), valid=valid)
