"""State a client keeps across rounds, on the device: SCAFFOLD's control variate, a
personal head, a local optimizer's moments.

An app receives its client's state as a plain ``dict[str, np.ndarray]`` with each task and
may change it in place. The runtime commits the changes only when the server counted
the result (a client that crashed mid-round, whose result was refused, or that a strategy
dropped as a straggler keeps its old state: SCAFFOLD's ``c`` must stay the mean of the
``c_i`` the server knows of), and keeps the committed states where the client lives: in
simulation a :class:`ClientStateStore` per backend (staged when a result comes back,
committed when the round loop says which results counted), saved in checkpoints; on a
real device, the device's own storage, once the server has accepted the result.

A population of millions can hold more state than memory (SCAFFOLD keeps a model-sized
vector per client), so the store keeps at most ``max_bytes`` of states in memory, the
most recently used, and spills the rest to safetensors files in a private temporary
folder, read back when their client is picked again.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from shoal.errors import CheckpointError

ClientState = dict[str, np.ndarray]


DEFAULT_MAX_BYTES = 1 << 30  # states kept in memory before the least recently used spill to disk


class ClientStateStore:
    """Committed per-client states, by client id."""

    def __init__(self, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes  # None: never spill
        self._by_client: OrderedDict[str, ClientState] = OrderedDict()  # in memory, least recent first
        self._bytes = 0
        self._spilled: set[str] = set()  # clients whose state is on disk only
        self._dir: Path | None = None
        self._staged: dict[str, ClientState] = {}  # this round's working states, not yet counted

    def __len__(self) -> int:
        return len(self._by_client) + len(self._spilled)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._by_client or client_id in self._spilled

    @property
    def spilled(self) -> int:
        """How many clients' states are on disk rather than in memory."""
        return len(self._spilled)

    def get(self, client_id: str) -> ClientState:
        """A deep working copy of the client's state ({} for a client never seen): the app
        may change it, arrays included, and nothing is kept unless it is passed to :meth:`put`."""
        if client_id in self._spilled:
            return dict(load_file(str(self._file(client_id))))  # fresh arrays: already a copy
        if client_id in self._by_client:
            self._by_client.move_to_end(client_id)  # recently used: spilled last
        return {name: value.copy() for name, value in self._by_client.get(client_id, {}).items()}

    def _file(self, client_id: str) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="shoal-client-states-"))
            weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir / (hashlib.sha256(client_id.encode()).hexdigest()[:40] + ".safetensors")

    def _drop(self, client_id: str) -> None:
        gone = self._by_client.pop(client_id, None)
        if gone is not None:
            self._bytes -= sum(v.nbytes for v in gone.values())
        if client_id in self._spilled:
            self._spilled.discard(client_id)
            self._file(client_id).unlink(missing_ok=True)

    def _spill(self) -> None:
        """Move the least recently used states to disk until memory is under the bound."""
        while self.max_bytes is not None and self._bytes > self.max_bytes and len(self._by_client) > 1:
            cid, state = self._by_client.popitem(last=False)
            self._bytes -= sum(v.nbytes for v in state.values())
            save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(self._file(cid)))
            self._spilled.add(cid)

    def put(self, client_id: str, state: ClientState) -> None:
        for name, value in state.items():
            if not isinstance(name, str) or not isinstance(value, np.ndarray):
                raise TypeError(
                    f"client state must map str to numpy arrays; {name!r} is {type(value).__name__}"
                )
        self._drop(client_id)
        if state:
            self._by_client[client_id] = dict(state)
            self._bytes += sum(v.nbytes for v in state.values())
            self._spill()

    def stage(self, client_id: str, state: ClientState) -> None:
        """Hold a state that :meth:`commit` keeps if the server counts this client's result."""
        self._staged[client_id] = state

    def commit(self, client_ids: Iterable[str]) -> None:
        """Keep the staged states of ``client_ids``; forget every other staged state."""
        staged, self._staged = self._staged, {}
        for cid in client_ids:
            if cid in staged:
                self.put(cid, staged[cid])

    def state_dict(self) -> dict[str, Any]:
        # Ids go in a list rather than in keys: a client id may contain any character.
        ids = sorted([*self._by_client, *self._spilled])
        return {"ids": ids, "states": [self._by_client.get(cid) or self.get(cid) for cid in ids]}

    def save(self, path: str | Path, client_id: str) -> None:
        """One client's state as safetensors, atomically: how a device keeps it across restarts."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in self.get(client_id).items()}, str(tmp))
        tmp.replace(path)

    def load(self, path: str | Path, client_id: str) -> None:
        """Restore a client's state saved by :meth:`save` (nothing if the file is absent)."""
        path = Path(path)
        if path.is_file():
            try:
                self.put(client_id, dict(load_file(str(path))))
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(
                    f"client state {path} is unreadable: {exc}; delete it to start afresh"
                ) from exc

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ids, states = state.get("ids", []), state.get("states", [])
        if len(ids) != len(states):
            raise ValueError(f"client state has {len(ids)} ids but {len(states)} states")
        for cid in [*self._by_client, *self._spilled]:
            self._drop(cid)
        for cid, s in zip(ids, states, strict=True):
            self.put(str(cid), {str(k): np.asarray(v) for k, v in s.items()})
