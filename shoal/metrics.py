"""How client metrics reach a round's record: one declared reducer per key.

Every numeric metric a client reports (``train_loss``, ``local_steps``, a user's own
``f1``) is folded over the round's results by its reducer and written to the record:
the example-weighted mean by default, under the metric's own name; other reducers
write ``KEY_REDUCER`` (``example_epsilon_max``: the least private client this round).
Declare a reducer for a new key with :func:`declare` (client algorithms declare theirs
in ``metric_reducers``). Metrics are read before the server transforms merge a cohort.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence

from shoal.errors import ConfigError
from shoal.messages import TrainResult
from shoal.transforms.base import AGGREGATED


class Reducer(enum.StrEnum):
    WEIGHTED_MEAN = "weighted_mean"  # by num_examples: the loss of the cohort's pooled data
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    SUM = "sum"


_FOLD: dict[Reducer, Callable[[Sequence[float], Sequence[int]], float]] = {
    Reducer.WEIGHTED_MEAN: lambda v, w: sum(a * b for a, b in zip(v, w, strict=True)) / sum(w)
    if sum(w)
    else sum(v) / len(v),
    Reducer.MEAN: lambda v, w: sum(v) / len(v),
    Reducer.MAX: lambda v, w: max(v),
    Reducer.MIN: lambda v, w: min(v),
    Reducer.SUM: lambda v, w: sum(v),
}

_DECLARED: dict[str, Reducer] = {}
_INTERNAL = frozenset({AGGREGATED})  # bookkeeping, not a measurement


def declare(key: str, reducer: str | Reducer) -> None:
    """Fold metric ``key`` with ``reducer`` from now on."""
    try:
        _DECLARED[key] = Reducer(reducer)
    except ValueError:
        allowed = ", ".join(repr(r.value) for r in Reducer)
        raise ConfigError(f"metric {key!r}: reducer {reducer!r} is unknown; choose {allowed}") from None


def reducers() -> Mapping[str, Reducer]:
    return dict(_DECLARED)


def record_key(key: str, reducer: Reducer) -> str:
    return key if reducer is Reducer.WEIGHTED_MEAN else f"{key}_{reducer.value}"


def reduce_metrics(results: Sequence[TrainResult]) -> dict[str, float]:
    """The round's value of every numeric metric the results report."""
    values: dict[str, tuple[list[float], list[int]]] = {}
    for r in results:
        for key, v in r.metrics.items():
            if key in _INTERNAL or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if not math.isfinite(v):
                continue
            vs, ws = values.setdefault(key, ([], []))
            vs.append(float(v))
            ws.append(r.num_examples)
    out = {}
    for key, (vs, ws) in sorted(values.items()):
        reducer = _DECLARED.get(key, Reducer.WEIGHTED_MEAN)
        out[record_key(key, reducer)] = _FOLD[reducer](vs, ws)
    return out
