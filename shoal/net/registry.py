"""The server's durable record: enrolled devices and committed rounds, in SQLite.

The model, the strategy's and transforms' state live in the round checkpoint (one file,
written atomically); this database keeps what a checkpoint does not: which devices have
joined, their last reported state and when they were last seen, and a log of every
committed or abandoned round. WAL mode and one statement per change, so a ``kill -9``
loses at most the change in flight.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
  client_id TEXT PRIMARY KEY,
  joined_at REAL NOT NULL,
  last_seen REAL NOT NULL,
  charging INTEGER, unmetered INTEGER, idle INTEGER, battery REAL
);
CREATE TABLE IF NOT EXISTS rounds (
  round INTEGER PRIMARY KEY,
  finished_at REAL NOT NULL,
  aborted INTEGER NOT NULL,
  clients_selected INTEGER, clients_completed INTEGER, test_accuracy REAL
);
"""


class Registry:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        self._written: dict[str, float] = {}  # client id -> last write (heartbeats are throttled)

    def seen(self, client_id: str, state: Any, joined: bool = False, every_s: float = 5.0) -> None:
        now = time.time()
        if not joined and now - self._written.get(client_id, 0.0) < every_s:
            return
        self._written[client_id] = now
        with self._lock:
            self._db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET "
                "last_seen=excluded.last_seen, charging=excluded.charging, unmetered=excluded.unmetered, "
                "idle=excluded.idle, battery=excluded.battery",
                (client_id, now, now, state.charging, state.unmetered, state.idle, state.battery),
            )

    def devices(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM devices ORDER BY client_id").fetchall()
        keys = ("client_id", "joined_at", "last_seen", "charging", "unmetered", "idle", "battery")
        return {row[0]: dict(zip(keys, row, strict=True)) for row in rows}

    def round_finished(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record["round"],
                    time.time(),
                    int(bool(record.get("aborted"))),
                    record.get("clients_selected"),
                    record.get("clients_completed"),
                    record.get("test_accuracy"),
                ),
            )

    def rounds(self) -> list[tuple[int, bool, int | None]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT round, aborted, clients_completed FROM rounds ORDER BY round"
            ).fetchall()
        return [(int(r), bool(a), c) for r, a, c in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
