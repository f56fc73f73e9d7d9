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
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from shoal.errors import CheckpointError

ClientState = dict[str, np.ndarray]


class ClientStateStore:
    """Committed per-client states, by client id."""

    def __init__(self) -> None:
        self._by_client: dict[str, ClientState] = {}
        self._staged: dict[str, ClientState] = {}  # this round's working states, not yet counted

    def __len__(self) -> int:
        return len(self._by_client)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._by_client

    def get(self, client_id: str) -> ClientState:
        """A deep working copy of the client's state ({} for a client never seen): the app
        may change it, arrays included, and nothing is kept unless it is passed to :meth:`put`."""
        return {name: value.copy() for name, value in self._by_client.get(client_id, {}).items()}

    def put(self, client_id: str, state: ClientState) -> None:
        for name, value in state.items():
            if not isinstance(name, str) or not isinstance(value, np.ndarray):
                raise TypeError(
                    f"client state must map str to numpy arrays; {name!r} is {type(value).__name__}"
                )
        if state:
            self._by_client[client_id] = dict(state)
        else:
            self._by_client.pop(client_id, None)

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
        ids = sorted(self._by_client)
        return {"ids": ids, "states": [self._by_client[cid] for cid in ids]}

    def save(self, path: str | Path, client_id: str) -> None:
        """One client's state as safetensors, atomically: how a device keeps it across restarts."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {k: np.ascontiguousarray(v) for k, v in self._by_client.get(client_id, {}).items()}, str(tmp)
        )
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
        self._by_client = {}
        for cid, s in zip(ids, states, strict=True):
            self.put(str(cid), {str(k): np.asarray(v) for k, v in s.items()})
