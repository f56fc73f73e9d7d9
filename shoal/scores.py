"""What a use case is judged by beyond accuracy: the ``[eval] metrics`` a run reports.

Each metric is a function of a test set's class scores (logits) and labels, so the
server's test set and every device's holdout are scored by the same code:

- ``topK`` (K from 2 to 10): the share of examples whose label is among the K highest
  scores (a keyboard's suggestion strip shows three).
- The binary ones score class 1 as the positive class (fraud, the wake word):
  ``precision``, ``recall`` and ``f1`` of the argmax decision; ``far``, the false accept
  rate (negatives accepted / negatives), and ``frr``, the false reject rate (positives
  rejected / positives), the two errors a wake word trades; ``pr_auc`` (average
  precision) and ``roc_auc`` over the softmax score of class 1, which need no threshold.
  PR-AUC is what class imbalance calls for: at a 0.5% fraud rate a model that never
  flags anything is 99.5% accurate, and its PR-AUC is the base rate.

A metric a test set cannot define (FRR with no positives, PR-AUC with one class) is left
out of that set's scores rather than reported as 0: a device's holdout of a few hundred
transactions often holds no fraud at all. Every value is a share in [0, 1], which is how
the server checks a device's report of them.

Records name them ``test_<metric>`` (the server's test set) and ``fed_eval_<metric>``
(the example-weighted mean over the devices that define it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from shoal.errors import ConfigError

BINARY = ("precision", "recall", "f1", "far", "frr", "pr_auc", "roc_auc")
_TOP_K = re.compile(r"top([2-9]|10)")


def check_metric(name: str) -> None:
    """Refuse a name that is not a metric here, with the ones that are."""
    if name not in BINARY and not _TOP_K.fullmatch(name):
        raise ConfigError(
            f"eval.metrics: unknown metric {name!r}; choose from top2..top10, {', '.join(BINARY)}"
        )


def is_metric(name: str) -> bool:
    return name in BINARY or _TOP_K.fullmatch(name) is not None


def binary(names: Sequence[str]) -> list[str]:
    """The metrics in ``names`` that need a two-class model."""
    return [n for n in names if n in BINARY]


def scores(logits: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``names`` over one test set: ``logits`` [n, classes], ``y`` [n]; the ones the set
    cannot define are left out."""
    out: dict[str, float] = {}
    for name in names:
        value = _top_k(logits, y, int(name[3:])) if name.startswith("top") else _binary(name, logits, y)
        if value is not None:
            out[name] = value
    return out


def _top_k(logits: np.ndarray, y: np.ndarray, k: int) -> float | None:
    if not len(y):
        return None
    k = min(k, logits.shape[1])
    best = np.argpartition(-logits, k - 1, axis=1)[:, :k]  # [n, k], unordered: membership is enough
    return float((best == y[:, None]).any(axis=1).mean())


def _binary(name: str, logits: np.ndarray, y: np.ndarray) -> float | None:
    if logits.shape[1] != 2:
        raise ValueError(f"eval.metrics {name!r} scores a two-class model; this one has {logits.shape[1]}")
    positive = y == 1
    if name in ("pr_auc", "roc_auc"):
        if positive.all() or not positive.any():  # one class only: no ranking to score
            return None
        from sklearn.metrics import average_precision_score, roc_auc_score

        shifted = logits - logits.max(axis=1, keepdims=True)  # softmax of class 1, overflow-safe
        p1 = np.exp(shifted[:, 1]) / np.exp(shifted).sum(axis=1)
        score: Callable[..., float] = average_precision_score if name == "pr_auc" else roc_auc_score
        return min(max(float(score(positive, p1)), 0.0), 1.0)  # float sums can land a hair above 1
    flagged = logits[:, 1] > logits[:, 0]
    tp = int((flagged & positive).sum())
    counts = {
        "precision": (tp, int(flagged.sum())),
        "recall": (tp, int(positive.sum())),
        "far": (int((flagged & ~positive).sum()), int((~positive).sum())),
        "frr": (int((~flagged & positive).sum()), int(positive.sum())),
    }
    if name == "f1":
        p, r = (_share(*counts[k]) for k in ("precision", "recall"))
        if p is None or r is None:
            return None
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return _share(*counts[name])


def _share(num: int, den: int) -> float | None:
    return num / den if den else None
