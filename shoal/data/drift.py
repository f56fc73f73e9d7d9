"""Client data that changes over rounds: drift schedules for continual learning.

A :class:`DriftSchedule` says what each client's data is at round ``r``, given the data
the client could ever hold (its *pool*: its share of a :class:`FederatedDataset`). It is a
pure function of (seed, round, client), as every draw in shoal is (``shoal/rng.py``), so a
resumed run sees the data an uninterrupted one would, and no client's data depends on
which others were asked first. Three kinds:

- :class:`NewClasses`: classes unlocked in stages (5 digits, then the other 5 from round
  R). By default a stage's data holds only its own classes, class-incremental learning,
  the setting where a model forgets (van de Ven & Tolias 2019); ``keep_old`` keeps them.
- :class:`LabelShift`: each client's label mix moves linearly from one Dirichlet draw to
  another between two rounds; each round's data is a draw of that mix from its pool.
- :class:`Joining`: clients (speaking roles of the play, new users) join at given rounds.

:func:`drifting` wraps a dataset into a :class:`DriftingDataset` whose ``clients`` are the
schedule's view at the current round (a lazy Mapping, as ``population.py``'s); the round
loop moves it on with :meth:`DriftingDataset.at_round`. :func:`view_at` is the pure form,
one round's snapshot. ``test_sets`` are what a report needs to show forgetting: the test
data of the first stage ("old") and of the later ones ("new"), and of each stage.
"""

from __future__ import annotations

import abc
import bisect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import torch

from shoal.continual.config import DriftKind
from shoal.data.datasets import ArrayDataset, ClientData, FederatedDataset
from shoal.errors import DataError
from shoal.rng import Stream, generator


class DriftSchedule(abc.ABC):
    """What every client's data is at each round; ``rounds`` are where stages begin."""

    kind: DriftKind
    rounds: tuple[int, ...]

    def stage(self, round: int) -> int:
        """0 before the first boundary, 1 from it, ...: the stage ``round`` belongs to."""
        return bisect.bisect_right(self.rounds, round)

    @abc.abstractmethod
    def view(self, client_id: str, pool: ClientData, round: int) -> ClientData | None:
        """``client_id``'s data at ``round`` out of its ``pool``; None: it is absent then."""

    @abc.abstractmethod
    def test_sets(self, base: FederatedDataset) -> dict[str, ArrayDataset]:
        """Named test sets to follow over rounds: "old" (stage 0's), "new" (later stages'),
        and, beyond two stages, "stage0", "stage1", ... (empty sets are left out)."""

    def describe(self) -> dict[str, str | int | float]:
        return {"drift": self.kind.value, "drift_rounds": ",".join(map(str, self.rounds))}


def _check_rounds(rounds: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(r) for r in rounds)
    if not out or out[0] < 2 or any(b <= a for a, b in itertools.pairwise(out)):
        raise DataError(f"drift rounds must be increasing and >= 2 (round 1 starts stage 0), got {list(out)}")
    return out


def _rows(data: ArrayDataset | None, keep: np.ndarray) -> ArrayDataset | None:
    """The rows of ``data`` where ``keep`` (a mask or indices) says so; None stays None."""
    if data is None:
        return None
    idx = np.flatnonzero(keep) if keep.dtype == bool else keep
    return data.subset(idx)


def _named(stages: Sequence[ArrayDataset | None]) -> dict[str, ArrayDataset]:
    """{"old", "new"} from one test set per stage, and "stage<s>" each when there are more
    than two stages (two: they are old and new). None or empty: left out."""
    kept = [s if s is not None and len(s) else None for s in stages]
    out = {f"stage{i}": s for i, s in enumerate(kept) if s is not None} if len(kept) > 2 else {}
    if kept[0] is not None:
        out["old"] = kept[0]
    later = [s for s in kept[1:] if s is not None]
    if later:
        out["new"] = ArrayDataset(torch.cat([s.x for s in later]), torch.cat([s.y for s in later]))
    return out


# -- new classes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class NewClasses(DriftSchedule):
    """Stage ``s`` (from round ``rounds[s - 1]``) brings the classes ``groups[s]``."""

    groups: tuple[tuple[int, ...], ...]
    rounds: tuple[int, ...]
    keep_old: bool = False  # False: a stage's data holds its own classes only
    kind = DriftKind.NEW_CLASSES

    def __post_init__(self) -> None:
        object.__setattr__(self, "rounds", _check_rounds(self.rounds))
        object.__setattr__(self, "groups", tuple(tuple(int(c) for c in g) for g in self.groups))
        if len(self.groups) != len(self.rounds) + 1:
            raise DataError(f"{len(self.rounds)} drift rounds make {len(self.rounds) + 1} stages of classes, "
                            f"got {len(self.groups)} groups")  # fmt: skip
        flat = [c for g in self.groups for c in g]
        if not all(self.groups) or len(set(flat)) != len(flat):
            raise DataError(f"each stage needs classes of its own, none in two stages; got {self.groups}")

    @classmethod
    def shuffled(
        cls, num_classes: int, rounds: Sequence[int], seed: int, keep_old: bool = False
    ) -> NewClasses:
        """The classes in a seeded order, cut into ``len(rounds) + 1`` near-equal stages."""
        if num_classes < len(rounds) + 1:
            raise DataError(
                f"{num_classes} classes cannot fill {len(rounds) + 1} stages; use fewer drift rounds"
            )
        order = generator(seed, 0, Stream.PARTITION, "drift:classes").permutation(num_classes)
        groups = tuple(tuple(sorted(int(c) for c in g)) for g in np.array_split(order, len(rounds) + 1))
        return cls(groups, tuple(rounds), keep_old)

    def classes(self, round: int) -> tuple[int, ...]:
        """The classes a client's data holds at ``round``."""
        s = self.stage(round)
        return tuple(sorted(c for g in self.groups[: s + 1] for c in g)) if self.keep_old else self.groups[s]

    def view(self, client_id: str, pool: ClientData, round: int) -> ClientData | None:
        wanted = np.asarray(self.classes(round))
        keep = np.isin(pool.train.y.numpy(), wanted)
        if not keep.any():
            return None
        test = _rows(pool.test, np.isin(pool.test.y.numpy(), wanted)) if pool.test is not None else None
        return ClientData(pool.train.subset(np.flatnonzero(keep)), test)

    def test_sets(self, base: FederatedDataset) -> dict[str, ArrayDataset]:
        if base.test is None:
            raise DataError(f"{base.name} has no central test set to split by stage")
        y = base.test.y.numpy()
        return _named([base.test.subset(np.flatnonzero(np.isin(y, g))) for g in self.groups])

    def describe(self) -> dict[str, str | int | float]:
        stages = " | ".join(",".join(map(str, g)) for g in self.groups)
        return {**super().describe(), "drift_classes": stages, "drift_keep_old": int(self.keep_old)}


# -- label shift -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelShift(DriftSchedule):
    """Each client's label mix moves from a first Dirichlet(alpha) draw to a second between
    ``rounds = (start, end)`` (or switches at ``rounds = (r,)``); a round's data is
    ``share`` times its pool's size, drawn from the pool with that round's mix (with
    replacement within a class the pool holds too little of)."""

    num_classes: int
    rounds: tuple[int, ...]
    seed: int
    alpha: float = 0.5
    share: float = 0.5
    kind = DriftKind.LABEL_SHIFT

    def __post_init__(self) -> None:
        object.__setattr__(self, "rounds", _check_rounds(self.rounds))
        if len(self.rounds) > 2:
            raise DataError(f"label shift moves between two rounds (start, end), got {list(self.rounds)}")
        if not self.alpha > 0 or not 0 < self.share <= 1:
            raise DataError(
                f"label shift needs alpha > 0 and share in (0, 1], got {self.alpha}, {self.share}"
            )

    def progress(self, round: int) -> float:
        """How far the move is at ``round``: 0 (first mix) to 1 (second)."""
        start, end = self.rounds[0], self.rounds[-1]
        if start == end:
            return float(round >= start)
        return float(np.clip((round - start) / (end - start), 0.0, 1.0))

    def mixes(self, client_id: str) -> np.ndarray:
        """The client's two label mixes, ``[2, num_classes]``."""
        rng = generator(self.seed, 0, Stream.PARTITION, f"drift:mix:{client_id}")
        out: np.ndarray = rng.dirichlet(np.full(self.num_classes, self.alpha), size=2)
        return out

    def mix(self, client_id: str, round: int) -> np.ndarray:
        first, second = self.mixes(client_id)
        t = self.progress(round)
        out: np.ndarray = (1 - t) * first + t * second
        return out

    def view(self, client_id: str, pool: ClientData, round: int) -> ClientData | None:
        y = pool.train.y.numpy()
        have = np.bincount(y, minlength=self.num_classes)[: self.num_classes] > 0
        p = self.mix(client_id, round) * have  # the mix over the classes this client holds
        if not p.sum():
            p = have.astype(float)
        rng = generator(self.seed, round, Stream.PARTITION, f"drift:sample:{client_id}")
        counts = rng.multinomial(max(1, round_half(self.share * len(y))), p / p.sum())
        # a class the mix asks for more of than the pool holds is drawn with replacement:
        # the mix is the drift, and a skewed one is rarely attainable from one client's pool
        picked = [
            rng.choice(np.flatnonzero(y == c), n, replace=n > (y == c).sum())
            for c, n in enumerate(counts)
            if n
        ]
        train = pool.train.subset(np.sort(np.concatenate(picked)))
        test = None
        if pool.test is not None:  # the holdout, in the same mix
            test = pool.test.subset(proportional(pool.test.y.numpy(), p / p.sum(), rng))
        return ClientData(train, test)

    def population_mix(self, base: FederatedDataset, which: int) -> np.ndarray:
        """The mix of the whole population's data (clients weighted by pool size) at draw
        ``which`` (0: before the move, 1: after)."""
        sizes = base.sizes()
        total = np.zeros(self.num_classes)
        for cid in base.client_ids:
            total += sizes[cid] * self.mixes(cid)[which]
        out: np.ndarray = total / total.sum()
        return out

    def test_sets(self, base: FederatedDataset) -> dict[str, ArrayDataset]:
        if base.test is None:
            raise DataError(f"{base.name} has no central test set to reweight")
        y = base.test.y.numpy()
        rng = generator(self.seed, 0, Stream.PARTITION, "drift:test")
        return _named([base.test.subset(proportional(y, self.population_mix(base, w), rng)) for w in (0, 1)])


def round_half(x: float) -> int:
    return int(np.floor(x + 0.5))


def proportional(labels: np.ndarray, mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the largest subset of ``labels`` whose classes are in proportions ``mix``
    (each class's rows in a seeded order, so the subset is random within a class)."""
    have = np.bincount(labels, minlength=len(mix))[: len(mix)]
    used = mix > 0
    if not (have[used] > 0).all():
        used &= have > 0  # a class the data lacks cannot be matched; the rest keep their ratios
    if not used.any():
        return np.zeros(0, np.int64)
    scale = float(np.min(have[used] / mix[used]))
    counts = np.floor(scale * mix * used + 1e-9).astype(int)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in enumerate(counts) if n]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


# -- joining ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Joining(DriftSchedule):
    """Client ``c`` takes part from the start of stage ``stages[c]``."""

    stages: Mapping[str, int]
    rounds: tuple[int, ...]
    kind = DriftKind.JOINING

    def __post_init__(self) -> None:
        object.__setattr__(self, "rounds", _check_rounds(self.rounds))
        object.__setattr__(self, "stages", MappingProxyType(dict(self.stages)))
        bad = {c: s for c, s in self.stages.items() if not 0 <= s <= len(self.rounds)}
        if bad:
            raise DataError(f"joining stages must be in 0..{len(self.rounds)}, got {bad}")
        if 0 not in self.stages.values():
            raise DataError("no client takes part from the first round; give stage 0 to some")

    @classmethod
    def shuffled(cls, client_ids: Sequence[str], rounds: Sequence[int], seed: int) -> Joining:
        """Clients in a seeded order, cut into ``len(rounds) + 1`` near-equal cohorts."""
        if len(client_ids) < len(rounds) + 1:
            raise DataError(f"{len(client_ids)} clients cannot fill {len(rounds) + 1} joining cohorts")
        order = generator(seed, 0, Stream.PARTITION, "drift:join").permutation(len(client_ids))
        cohorts = np.array_split(order, len(rounds) + 1)
        return cls({client_ids[i]: s for s, cohort in enumerate(cohorts) for i in cohort}, tuple(rounds))

    def view(self, client_id: str, pool: ClientData, round: int) -> ClientData | None:
        joins = self.stages.get(client_id)
        if joins is None:
            raise DataError(f"client {client_id!r} has no joining stage in this schedule")
        return pool if joins <= self.stage(round) else None

    def test_sets(self, base: FederatedDataset) -> dict[str, ArrayDataset]:
        per_stage: list[list[ArrayDataset]] = [[] for _ in range(len(self.rounds) + 1)]
        for cid in base.client_ids:
            held = base[cid].test
            if held is not None and len(held):
                per_stage[self.stages[cid]].append(held)
        if not any(per_stage):
            raise DataError("joining's test sets are the clients' holdouts: set holdout_fraction > 0")
        return _named(
            [
                ArrayDataset(torch.cat([t.x for t in s]), torch.cat([t.y for t in s])) if s else None
                for s in per_stage
            ]
        )

    def describe(self) -> dict[str, str | int | float]:
        counts = np.bincount(list(self.stages.values()), minlength=len(self.rounds) + 1)
        return {**super().describe(), "drift_cohorts": ",".join(map(str, counts))}


def schedule_for(
    kind: DriftKind | str,
    base: FederatedDataset,
    rounds: Sequence[int],
    seed: int,
    *,
    keep_old: bool = False,
    alpha: float = 0.5,
    share: float = 0.5,
) -> DriftSchedule:
    """The schedule of ``kind`` over ``base``, every draw from ``seed``."""
    kind = DriftKind(kind)
    if kind is DriftKind.NEW_CLASSES:
        return NewClasses.shuffled(base.num_classes, rounds, seed, keep_old)
    if kind is DriftKind.LABEL_SHIFT:
        return LabelShift(base.num_classes, tuple(rounds), seed, alpha, share)
    return Joining.shuffled(list(base.client_ids), rounds, seed)


# -- the dataset the round loop sees ---------------------------------------------------------
class DriftingClients(Mapping[str, ClientData]):
    """Client id -> its data at the current round, for the clients present then.

    ``ids`` (what the round loop samples from) are the clients present at the current
    round; ``sizes`` are the pools' sizes, an upper bound on any round's data, which is
    what the loop's claim limit needs. A round's views are made once, when the round is
    set, and kept until the next."""

    def __init__(self, base: FederatedDataset, schedule: DriftSchedule, round: int = 1) -> None:
        self.base, self.schedule = base, schedule
        self.round = 0
        self._views: dict[str, ClientData] = {}
        self.at_round(round)

    def at_round(self, round: int) -> None:
        if round == self.round:
            return
        views = {cid: self.schedule.view(cid, self.base[cid], round) for cid in self.base.client_ids}
        present = {cid: v for cid, v in views.items() if v is not None}
        if not present:
            raise DataError(f"the drift schedule leaves no client with data at round {round}")
        self.round, self._views = round, present

    @property
    def ids(self) -> list[str]:
        return list(self._views)

    def __getitem__(self, client_id: str) -> ClientData:
        return self._views[client_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._views

    def sizes(self) -> Mapping[str, int]:
        return self.base.sizes()


class DriftingDataset(FederatedDataset):
    """A :class:`FederatedDataset` whose clients follow a drift schedule; the round loop
    calls :meth:`at_round` before each round (see the design notes for the loop's line)."""

    def __post_init__(self) -> None:
        if not isinstance(self.clients, DriftingClients):
            raise DataError("a DriftingDataset's clients are a DriftingClients; build it with drifting()")
        super().__post_init__()

    @property
    def drift(self) -> DriftingClients:
        clients = self.clients
        if not isinstance(clients, DriftingClients):  # for mypy; __post_init__ made sure
            raise DataError("a DriftingDataset's clients are a DriftingClients")
        return clients

    @property
    def schedule(self) -> DriftSchedule:
        return self.drift.schedule

    @property
    def round(self) -> int:
        return self.drift.round

    def at_round(self, round: int) -> None:
        """Make ``clients`` the schedule's view at ``round``."""
        self.drift.at_round(round)

    def test_sets(self) -> dict[str, ArrayDataset]:
        return self.schedule.test_sets(self.drift.base)


def drifting(base: FederatedDataset, schedule: DriftSchedule, round: int = 1) -> DriftingDataset:
    """``base`` with its clients' data following ``schedule``, set at ``round``."""
    return DriftingDataset(
        name=f"{base.name}+{schedule.kind.value}",
        clients=DriftingClients(base, schedule, round),
        num_classes=base.num_classes,
        input_shape=base.input_shape,
        test=base.test,
        description={**base.description, **schedule.describe()},
    )


def view_at(base: FederatedDataset, schedule: DriftSchedule, round: int) -> FederatedDataset:
    """The pure form: ``base`` as it is at ``round`` (only the clients present then)."""
    clients = {cid: v for cid in base.client_ids if (v := schedule.view(cid, base[cid], round)) is not None}
    if not clients:
        raise DataError(f"the drift schedule leaves no client with data at round {round}")
    return replace(base, name=f"{base.name}@{round}", clients=clients)
