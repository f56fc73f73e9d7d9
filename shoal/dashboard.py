"""A live, read-only dashboard of a run: ``shoal dashboard RUN_DIR`` and ``shoal server --dashboard``.

The page follows the run folder's ``metrics.jsonl`` (what every simulation and served run
writes, one record a round) and ``summary.json``: round progress, accuracy and loss,
devices selected / completed / failed (with the failures' reasons), bytes per round, the
privacy budget spent, wall or virtual time. A live server adds what only it knows (the
devices connected now). The browser gets new rounds as server-sent events
(``/api/events``), with ``/api/state`` for the whole run so far.

Why the standard library's HTTP server and not a web framework: the dashboard serves one
page and two read-only JSON routes, and must start in any process shoal runs in (a
server's thread, a notebook). What it must get right is exposure, and that is checked
here: it binds to loopback unless told otherwise, and bound anywhere else it requires a
token (``Authorization: Bearer``, or ``?token=`` for the page's own requests), compared
in constant time. It answers GET and HEAD only, on four fixed paths; it never serves a
file by name and never writes.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shoal.errors import ConfigError

Live = Callable[[], dict[str, Any]]  # what a running server adds: {"devices_connected": n}
POLL_S = 0.5  # how often the event stream looks for new rounds
HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing an idle stream


def loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"dashboard address {address!r} must be host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


class RunFolder:
    """What the page shows, read from a run folder as the run writes it."""

    def __init__(self, run_dir: Path, live: Live | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.live = live
        self._records: list[dict[str, Any]] = []
        self._offset = 0  # bytes of metrics.jsonl read so far
        self._lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record so far; a line still being written waits for the next read.
        A truncated file (a resumed run drops rounds after its checkpoint) is read afresh."""
        path = self.run_dir / "metrics.jsonl"
        with self._lock:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return list(self._records)
            if size < self._offset:
                self._records, self._offset = [], 0
            with path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read(size - self._offset)
            done = chunk.rfind(b"\n") + 1
            for line in chunk[:done].splitlines():
                if line.strip():
                    try:
                        self._records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # not a record; the run's own log never writes one
            self._offset += done
            return list(self._records)

    def state(self) -> dict[str, Any]:
        return {
            "run": self.run_dir.name,
            "planned_rounds": self._planned(),
            "summary": self.summary(),
            "records": self.records(),
            "live": self.live() if self.live is not None else None,
            "time": time.time(),
        }

    def summary(self) -> dict[str, Any] | None:
        """The run's summary.json: there once the run has finished."""
        try:
            loaded = json.loads((self.run_dir / "summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def _planned(self) -> int | None:
        """The run's round count, from its saved config (without building any of it)."""
        import tomllib

        try:
            raw = tomllib.loads((self.run_dir / "config.toml").read_text())
        except (FileNotFoundError, tomllib.TOMLDecodeError):
            return None
        rounds = raw.get("rounds")
        return rounds if isinstance(rounds, int) else None


def _page() -> bytes:
    return resources.files("shoal").joinpath("dashboard.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "shoal-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a dashboard's requests are not the run's news

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._authorized(parse_qs(url.query)):
            self._send(
                HTTPStatus.UNAUTHORIZED, b"a token is required: open the address the dashboard printed\n"
            )
            return
        if url.path == "/":
            self._send(HTTPStatus.OK, _page(), "text/html; charset=utf-8")
        elif url.path == "/api/state":
            self._send(HTTPStatus.OK, json.dumps(self.server.folder.state()).encode(), "application/json")
        elif url.path == "/api/events":
            self._events()
        elif url.path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def do_HEAD(self) -> None:
        self._send(HTTPStatus.OK if urlsplit(self.path).path == "/healthz" else HTTPStatus.NOT_FOUND, b"")

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"the dashboard is read-only\n", allow="GET, HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        kind: str = "text/plain; charset=utf-8",
        allow: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; frame-ancestors 'none'")  # fmt: skip
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _events(self) -> None:
        """Server-sent events: the whole state first, then each new round's record, until
        the browser leaves or the dashboard stops."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        folder = self.server.folder
        state = folder.state()
        sent, summary, beat = len(state["records"]), state["summary"], time.monotonic()
        try:
            self._event("state", state)
            while not self.server.stopping.wait(POLL_S):
                records = folder.records()
                if len(records) < sent:  # the file was truncated (a resume): start over
                    self._event("state", folder.state())
                    sent = len(records)
                for record in records[sent:]:
                    self._event("record", record)
                sent = len(records)
                if (now := folder.summary()) != summary:  # the run finished (or was resumed)
                    self._event("summary", now)
                    summary = now
                if folder.live is not None:
                    self._event("live", folder.live())
                if time.monotonic() - beat > HEARTBEAT_S:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    beat = time.monotonic()
        except (BrokenPipeError, ConnectionResetError):
            return  # the browser left

    def _event(self, kind: str, data: Any) -> None:
        self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    folder: RunFolder
    token: str | None
    stopping: threading.Event


@dataclass(frozen=True)
class DashboardSpec:
    """A dashboard a long-running command should start beside its work (``shoal server``)."""

    address: str
    token: str | bool | None = None
    announce: Callable[[str], None] = print  # told the address to open, token included

    def start(self, run_dir: Path, live: Live | None = None) -> Dashboard:
        board = Dashboard(run_dir, self.address, self.token, live).start()
        self.announce(board.url)
        return board


class Dashboard:
    """Serves one run folder's page until :meth:`stop`.

    Bound to a loopback address it needs no token; bound anywhere else it refuses to start
    without one (``token=True`` makes one up; the address to open, token included, is
    :attr:`url`)."""

    def __init__(
        self,
        run_dir: Path,
        address: str = "127.0.0.1:8080",
        token: str | bool | None = None,
        live: Live | None = None,
    ) -> None:
        host, port = parse_address(address)
        if token is True:
            token = secrets.token_urlsafe(24)
        if not token and not loopback(host):
            raise ConfigError(
                f"a dashboard bound to {host} can be reached from other machines: give it a token "
                "(--dashboard-token FILE), or bind it to 127.0.0.1"
            )
        self.token: str | None = token or None
        self._server = _Server((host, port), _Handler)
        self._server.folder = RunFolder(run_dir, live)
        self._server.token = self.token
        self._server.stopping = threading.Event()
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="shoal-dashboard", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> Dashboard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()  # event streams end at their next poll
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
