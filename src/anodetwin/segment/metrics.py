"""Segmentation scores against a reference: Dice overlap and instance matching."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodetwin.errors import ShapeMismatchError

__all__ = ["dice", "InstanceScore", "instance_score", "overlap_table"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A and B| / (|A| + |B|) of two masks (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"masks of shapes {a.shape} and {b.shape}",
                                 "compare masks of one grid")
    n = int(a.sum()) + int(b.sum())
    return 1.0 if n == 0 else 2.0 * int((a & b).sum()) / n


def overlap_table(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (id_a, id_b) of overlapping non-zero labels and their voxel counts."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    sel = (a > 0) & (b > 0)
    if not sel.any():
        z = np.zeros(0, np.int64)
        return z, z, z
    key = a[sel].astype(np.int64) * (int(b.max()) + 1) + b[sel]
    k, n = np.unique(key, return_counts=True)
    return k // (int(b.max()) + 1), k % (int(b.max()) + 1), n


@dataclass(frozen=True)
class InstanceScore:
    """Instance matching at an IoU threshold: one-to-one matches (IoU > threshold >= 0.5
    makes matches unique), precision, recall and F1."""

    matches: int
    predicted: int
    reference: int
    precision: float
    recall: float
    f1: float
    iou: float


def instance_score(pred: np.ndarray, ref: np.ndarray, iou: float = 0.5) -> InstanceScore:
    """Score predicted instances against reference instances (0 = background)."""
    p, r = np.asarray(pred), np.asarray(ref)
    if p.shape != r.shape:
        raise ShapeMismatchError(f"instance volumes of shapes {p.shape} and {r.shape}",
                                 "compare labels of one grid")
    sp = np.bincount(p.ravel())
    sr = np.bincount(r.ravel())
    ia, ib, n = overlap_table(p, r)
    union = sp[ia] + sr[ib] - n
    good = n / np.maximum(union, 1) > iou
    matches = len(np.unique(ia[good]))
    n_p = int((sp[1:] > 0).sum())
    n_r = int((sr[1:] > 0).sum())
    prec = matches / n_p if n_p else 1.0
    rec = matches / n_r if n_r else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return InstanceScore(matches, n_p, n_r, prec, rec, f1, iou)
