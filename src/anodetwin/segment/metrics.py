"""Segmentation scores against a reference: Dice overlap and instance matching."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodetwin.errors import ShapeMismatchError

__all__ = ["dice", "InstanceScore", "instance_score", "overlap_table"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A and B| / (|A| + |B|) of two masks.

    Parameters
    ----------
    a, b : numpy.ndarray of bool
        Masks on one grid.

    Returns
    -------
    float
        Dice coefficient in [0, 1] (1 when both masks are empty).

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"masks of shapes {a.shape} and {b.shape}",
                                 "compare masks of one grid")
    n = int(a.sum()) + int(b.sum())
    return 1.0 if n == 0 else 2.0 * int((a & b).sum()) / n


def overlap_table(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of overlapping non-zero labels and their voxel counts.

    Parameters
    ----------
    a, b : numpy.ndarray of int
        Label volumes on one grid (0 = background).

    Returns
    -------
    id_a, id_b, voxels : numpy.ndarray of int64, shape (K,)
        Each overlapping pair (label of ``a``, label of ``b``) once and its number of shared
        voxels, in ascending order of the pair.
    """
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
    """Instance matching at an IoU threshold.

    One-to-one matches (an IoU above a threshold >= 0.5 makes matches unique), precision,
    recall and F1.

    Attributes
    ----------
    matches : int
        Predicted instances matched to a reference instance.
    predicted, reference : int
        Number of predicted and reference instances.
    precision, recall, f1 : float
        matches / predicted, matches / reference (1 with none) and their harmonic mean.
    iou : float
        The IoU threshold.
    """

    matches: int
    predicted: int
    reference: int
    precision: float
    recall: float
    f1: float
    iou: float


def instance_score(pred: np.ndarray, ref: np.ndarray, iou: float = 0.5) -> InstanceScore:
    """Score predicted instances against reference instances.

    Parameters
    ----------
    pred, ref : numpy.ndarray of int
        Instance labels on one grid (0 = background).
    iou : float
        A pair matches when its intersection over union exceeds this.

    Returns
    -------
    InstanceScore

    Raises
    ------
    ShapeMismatchError
        If the volumes differ in shape.
    """
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
