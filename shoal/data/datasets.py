"""In-memory datasets: what a loader returns and what a client holds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from shoal.errors import DataError


@dataclass(frozen=True)
class ArrayDataset:
    """Features ``x`` ([n, ...]: float32, or int64 token ids for text) and integer labels
    ``y`` ([n]) as tensors."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        if self.x.dtype not in (torch.float32, torch.int64):
            raise DataError(f"features must be float32 (or int64 token ids), got {self.x.dtype}")
        if self.y.dtype != torch.int64 or self.y.ndim != 1:
            raise DataError(f"labels must be a 1-D int64 tensor, got {self.y.dtype}{list(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(self.x[idx].contiguous(), self.y[idx].contiguous())

    @classmethod
    def from_tokens(cls, x: np.ndarray, y: np.ndarray) -> ArrayDataset:
        """Token-id features (text), kept as int64."""
        return cls(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        )

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray) -> ArrayDataset:
        return cls(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        )


@dataclass(frozen=True)
class LabeledData:
    """A centralized dataset as a loader returns it: train split, optional test split."""

    name: str
    train: ArrayDataset
    test: ArrayDataset | None
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class ClientData:
    """One device's data: what it trains on and what it holds out for federated evaluation."""

    train: ArrayDataset
    test: ArrayDataset | None = None


@dataclass(frozen=True)
class FederatedDataset:
    """Client id -> that client's data, plus the server's centralized test set (if any)."""

    name: str
    clients: Mapping[str, ClientData]
    num_classes: int
    input_shape: tuple[int, ...]
    test: ArrayDataset | None = None
    description: Mapping[str, str | int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.clients):
            raise DataError(f"{self.name}: a federated dataset needs at least one client")
        if isinstance(self.clients, dict):  # frozen; a Mapping of another kind (a lazily
            # generated population, shoal.data.population) is kept as it is
            object.__setattr__(self, "clients", MappingProxyType(dict(self.clients)))
        object.__setattr__(self, "description", MappingProxyType(dict(self.description)))

    def __len__(self) -> int:
        return len(self.clients)

    def __iter__(self) -> Iterator[str]:
        return iter(self.clients)

    def __getitem__(self, client_id: str) -> ClientData:
        return self.clients[client_id]

    @property
    def client_ids(self) -> Sequence[str]:
        ids = getattr(self.clients, "ids", None)  # a population lists its ids without storing them
        return ids if isinstance(ids, Sequence) else list(self.clients)

    def at_round(self, round: int) -> None:
        """Ready ``clients`` for ``round`` (the loop calls it first thing each round): data
        that drifts (``shoal/data/drift.py``) changes with the round; fixed data does not."""

    def test_sets(self) -> dict[str, ArrayDataset]:
        """Named test sets the loop scores beside ``test`` (a drift's old and new data)."""
        return {}

    def sizes(self) -> Mapping[str, int]:
        """Each client's training-set size (a population reads them without making its data)."""
        sizes = getattr(self.clients, "sizes", None)
        if callable(sizes):
            made: Mapping[str, int] = sizes()
            return made
        return {cid: len(c.train) for cid, c in self.clients.items()}


@dataclass(frozen=True)
class ServerData:
    """What a deployed server holds: the shapes its model is built for and, optionally, its
    own test set. The devices' data stays on the devices, and the population is whoever
    connects, so there are no client ids or sizes here (compare :class:`FederatedDataset`,
    the simulation's view of every client)."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    test: ArrayDataset | None = None
