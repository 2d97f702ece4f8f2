"""GLUE metrics in numpy (the standard definitions, as sklearn / scipy compute them).

    accuracy; F1 of the positive class; Matthews correlation; Pearson and Spearman correlation
    (Spearman = Pearson of average ranks). Which task reports which: glue_data.TASKS.
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


# name -> f(pred, label, scores computed so far); a task's list is in glue_data.TASKS
_SCORES = {
    "accuracy": lambda p, y, done: accuracy(p, y),
    "f1": lambda p, y, done: f1_binary(p, y),
    "acc_and_f1": lambda p, y, done: (done["accuracy"] + done["f1"]) / 2,
    "mcc": lambda p, y, done: matthews_corr(p, y),
    "pearson": lambda p, y, done: pearson(p, y),
    "spearmanr": lambda p, y, done: spearman(p, y),
    "corr": lambda p, y, done: (done["pearson"] + done["spearmanr"]) / 2,
}


def glue_metrics(task: str, pred, label) -> Dict[str, float]:
    """The task's scores (glue_data.TASKS names them); `pred` are class ids (scores for STS-B)."""
    from nlu.glue_data import task_spec   # the table; imported here so the metrics load alone
    try:
        spec = task_spec(task)
    except ValueError as e:
        raise ValueError(f"no metric for task {task!r}: {e}") from None
    done: Dict[str, float] = {}
    for name in spec.scores:
        done[name] = _SCORES[name](pred, label, done)
    return done
