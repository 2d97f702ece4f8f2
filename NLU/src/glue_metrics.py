"""GLUE metrics in numpy (the standard definitions, as sklearn / scipy compute them).

    CoLA: Matthews correlation        SST-2, RTE, QNLI, MNLI: accuracy
    MRPC, QQP: F1 of the positive class and accuracy
    STS-B: Pearson and Spearman correlation (Spearman = Pearson of average ranks)
Degenerate inputs (a constant prediction) give 0.0 where the formula divides by zero, as
sklearn's matthews_corrcoef does.
"""
from typing import Dict

import numpy as np


def accuracy(pred, label) -> float:
    pred, label = np.asarray(pred), np.asarray(label)
    return float((pred == label).mean()) if len(label) else 0.0


def f1_binary(pred, label) -> float:
    pred, label = np.asarray(pred) == 1, np.asarray(label) == 1
    tp = float(np.sum(pred & label))
    fp = float(np.sum(pred & ~label))
    fn = float(np.sum(~pred & label))
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


def matthews_corr(pred, label) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); the binary phi coefficient for 2."""
    pred, label = np.asarray(pred), np.asarray(label)
    classes = np.union1d(pred, label)
    idx_p = np.searchsorted(classes, pred)
    idx_t = np.searchsorted(classes, label)
    k = len(classes)
    c = np.zeros((k, k), dtype=np.float64)
    np.add.at(c, (idx_t, idx_p), 1.0)
    t_sum, p_sum = c.sum(axis=1), c.sum(axis=0)
    n, correct = c.sum(), np.trace(c)
    cov_ytyp = correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    denom = cov_ytyt * cov_ypyp
    return float(cov_ytyp / np.sqrt(denom)) if denom > 0 else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    return float(np.dot(xc, yc) / denom) if denom > 0 else 0.0


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks (scipy's rankdata 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0   # mean of ranks s+1 .. e
    return ranks


def spearman(x, y) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def glue_metrics(task: str, pred, label) -> Dict[str, float]:
    """Scores of one task; `pred` are class ids (scores for STS-B)."""
    t = task.lower().replace("-", "")
    if t == "cola":
        return {"mcc": matthews_corr(pred, label), "accuracy": accuracy(pred, label)}
    if t == "stsb":
        p, s = pearson(pred, label), spearman(pred, label)
        return {"pearson": p, "spearmanr": s, "corr": (p + s) / 2}
    if t in ("mrpc", "qqp"):
        a, f = accuracy(pred, label), f1_binary(pred, label)
        return {"accuracy": a, "f1": f, "acc_and_f1": (a + f) / 2}
    if t in ("sst2", "rte", "qnli", "mnli", "mnlim", "mnlimm", "wnli"):
        return {"accuracy": accuracy(pred, label)}
    raise ValueError(f"no metric for task {task!r}")
