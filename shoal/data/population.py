"""Populations too large to hold: each client's data made from its own seed when used.

:func:`synthetic_population` is FedProx's synthetic(alpha, beta) task (see
``synthetic.py``) with every device drawn from ``(seed, device index)`` instead of one
sequential stream, so device 731,004 costs what device 0 costs, and a million-device
population costs only the devices a run touches (kept in a small cache). Client ids are
``"0"`` .. ``"n-1"`` (:class:`IdRange`, which never lists them). The central test set is
the test splits of the first ``test_devices`` devices.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import overload

import numpy as np

from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.data.synthetic import CLASSES, FEATURES
from shoal.errors import DataError


class IdRange(Sequence[str]):
    """The ids ``"0"`` .. ``"n-1"`` as a sequence that stores none of them."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [str(k) for k in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return str(i % self.n)

    def __iter__(self) -> Iterator[str]:
        return (str(k) for k in range(self.n))

    def __contains__(self, cid: object) -> bool:
        return self.position(cid) is not None

    def position(self, cid: object) -> int | None:
        """``cid``'s index, or None if it is not one of these ids."""
        if not isinstance(cid, str) or not cid.isdigit() or (len(cid) > 1 and cid[0] == "0"):
            return None
        k = int(cid)
        return k if k < self.n else None


class _Sizes(Mapping[str, int]):
    def __init__(self, ids: IdRange, sizes: np.ndarray) -> None:
        self.ids, self.array = ids, sizes

    def __getitem__(self, cid: str) -> int:
        k = self.ids.position(cid)
        if k is None:
            raise KeyError(cid)
        return int(self.array[k])

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def values(self) -> Sequence[int]:  # type: ignore[override]
        return self.array.tolist()  # type: ignore[no-any-return]


class SyntheticPopulation(Mapping[str, ClientData]):
    """Client id -> that device's data, generated on first use and cached."""

    def __init__(
        self, n: int, alpha: float, beta: float, seed: int, test_fraction: float, cache: int
    ) -> None:
        self.ids = IdRange(n)
        self.alpha, self.beta, self.seed, self.test_fraction = alpha, beta, seed, test_fraction
        # device sizes: int(lognormal(4, 2)) + 50 as in the paper, capped so no one device
        # of a million holds more than the whole task would
        rng = np.random.default_rng([seed, 0])
        self._sizes = np.minimum(rng.lognormal(4, 2, n).astype(np.int64) + 50, 10_000)
        self._scale = np.sqrt(np.arange(1, FEATURES + 1, dtype=np.float64) ** -1.2)
        self._make = functools.lru_cache(maxsize=cache)(self._generate)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __getitem__(self, cid: str) -> ClientData:
        k = self.ids.position(cid)
        if k is None:
            raise KeyError(cid)
        data: ClientData = self._make(k)
        return data

    def sizes(self) -> _Sizes:
        """Each device's training-set size, without generating any device."""
        train = np.round(self._sizes * (1 - self.test_fraction)).astype(np.int64)
        return _Sizes(self.ids, train)

    def _generate(self, k: int) -> ClientData:
        rng = np.random.default_rng([self.seed, 1, k])
        u, mean_shift = rng.normal(0, self.alpha), rng.normal(0, self.beta)
        w, b = rng.normal(u, 1, (FEATURES, CLASSES)), rng.normal(u, 1, CLASSES)
        v = rng.normal(mean_shift, 1, FEATURES)
        x = v + self._scale * rng.standard_normal((int(self._sizes[k]), FEATURES))
        y = np.argmax(x @ w + b, axis=1)
        cut = int(np.round(len(y) * (1 - self.test_fraction)))
        return ClientData(
            ArrayDataset.from_numpy(x[:cut], y[:cut]), ArrayDataset.from_numpy(x[cut:], y[cut:])
        )


def synthetic_population(
    num_clients: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    seed: int = 0,
    test_fraction: float = 0.1,
    test_devices: int = 100,
    cache: int = 4096,
) -> FederatedDataset:
    """A synthetic(alpha, beta) population of ``num_clients`` devices, made lazily."""
    if alpha < 0 or beta < 0:
        raise DataError(f"synthetic alpha and beta are standard deviations: >= 0, got {alpha}, {beta}")
    if num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    clients = SyntheticPopulation(num_clients, alpha, beta, seed, test_fraction, cache)
    tests = [clients[str(k)].test for k in range(min(test_devices, num_clients))]
    union = ArrayDataset.from_numpy(
        np.concatenate([t.x.numpy() for t in tests if t is not None]),
        np.concatenate([t.y.numpy() for t in tests if t is not None]),
    )
    return FederatedDataset(
        f"synthetic-population({alpha:g},{beta:g})",
        clients,
        CLASSES,
        (FEATURES,),
        union,
        {"alpha": alpha, "beta": beta, "num_clients": num_clients},
    )
