"""How client metrics reach a round's record: one declared reducer per key.

Every numeric metric a client reports (``train_loss``, ``local_steps``, a user's own
``f1``) is folded over the round's results by its reducer and written to the record:
the example-weighted mean by default, under the metric's own name; other reducers
write ``KEY_REDUCER`` (``example_epsilon_max``: the least private client this round).
Declare a reducer for a new key with :func:`declare` (client algorithms declare theirs
in ``metric_reducers``). Metrics are read before the server transforms merge a cohort.

A folded key that the server's own record already holds (``test_accuracy``, ``round``,
``clients_selected``, a transform's ``dp_epsilon``) never replaces the server's value: it
is written as ``client_KEY`` instead, with a warning (:func:`add_to_record`).
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

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
    Reducer.WEIGHTED_MEAN: lambda v, w: (
        sum(a * b for a, b in zip(v, w, strict=True)) / sum(w) if sum(w) else sum(v) / len(v)
    ),
    Reducer.MEAN: lambda v, w: sum(v) / len(v),
    Reducer.MAX: lambda v, w: max(v),
    Reducer.MIN: lambda v, w: min(v),
    Reducer.SUM: lambda v, w: sum(v),
}

_DECLARED: dict[str, Reducer] = {}
_INTERNAL = frozenset({AGGREGATED})  # bookkeeping, not a measurement
CLIENT_PREFIX = "client_"  # what a client metric is renamed to when the server's record has its key


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
    from shoal.client.algorithm import load_builtins  # their reducers are declared on registering

    load_builtins()
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


def add_to_record(record: MutableMapping[str, Any], folded: Mapping[str, float]) -> None:
    """Write the round's folded client metrics into ``record`` after the server's own keys.

    A client's key that the record already holds is written as ``client_KEY``: a client
    reporting ``round`` or ``test_accuracy`` must neither replace the server's value nor
    be lost."""
    for key, value in folded.items():
        name = key
        while name in record:
            name = CLIENT_PREFIX + name
        if name != key:
            warnings.warn(
                f"client metric {key!r} is recorded as {name!r}: the round's record already has "
                f"{key!r} from the server; rename the metric in your client",
                RuntimeWarning,
                stacklevel=2,
            )
        record[name] = value
