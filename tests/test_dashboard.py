"""The dashboard over real sockets: the page, its live events, and who may read it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shoal.cli import main
from shoal.dashboard import Dashboard, RunFolder
from shoal.errors import ConfigError

RECORD = {
    "round": 1, "aborted": False, "test_accuracy": 0.5, "clients_selected": 3, "clients_completed": 2,
    "clients_failed": 1, "failures": ["d7: rejected: claims 1000000000 examples"],
    "bytes_up": 10, "bytes_down": 20,
}  # fmt: skip


def run_folder(tmp_path: Path, rounds: int = 1) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.toml").write_text("rounds = 5\n")
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({**RECORD, "round": r + 1}) + "\n" for r in range(rounds))
    )
    return folder


def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_page_and_the_state_of_a_run_folder(tmp_path):
    with Dashboard(run_folder(tmp_path), "127.0.0.1:0") as board:
        status, page = get(board.url)
        assert status == 200 and b"shoal" in page and b"EventSource" in page
        status, body = get(board.url + "api/state")
        state = json.loads(body)
        assert status == 200 and state["planned_rounds"] == 5 and state["records"][0]["test_accuracy"] == 0.5
        assert state["summary"] is None  # still running
        for path in ("nope", "config.toml", "../run/metrics.jsonl", "api/state/../../etc/passwd"):
            assert get(board.url + path)[0] == 404, path
        for method in ("POST", "PUT", "DELETE"):
            assert get(board.url + "api/state", method=method)[0] == 405


def test_new_rounds_arrive_as_server_sent_events(tmp_path):
    folder = run_folder(tmp_path)
    with Dashboard(folder, "127.0.0.1:0") as board:
        events: list[tuple[str, dict]] = []

        def listen() -> None:
            with urllib.request.urlopen(board.url + "api/events", timeout=10) as stream:
                kind = None
                for raw in stream:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        events.append((kind, json.loads(line[6:])))
                        if kind == "record":
                            return

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        with (folder / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({**RECORD, "round": 2, "test_accuracy": 0.7}) + "\n")
        reader.join(timeout=10)
    assert events[0][0] == "state" and len(events[0][1]["records"]) == 1
    assert events[-1] == ("record", {**RECORD, "round": 2, "test_accuracy": 0.7})


def test_a_half_written_line_waits_and_a_truncated_log_is_read_afresh(tmp_path):
    folder = run_folder(tmp_path, rounds=3)
    watch = RunFolder(folder)
    assert [r["round"] for r in watch.records()] == [1, 2, 3]
    with (folder / "metrics.jsonl").open("a") as f:
        f.write('{"round": 4, "test_acc')
    assert len(watch.records()) == 3
    (folder / "metrics.jsonl").write_text(json.dumps({**RECORD, "round": 1}) + "\n")  # a resume cut it back
    assert [r["round"] for r in watch.records()] == [1]


def test_off_loopback_a_token_is_required(tmp_path):
    folder = run_folder(tmp_path)
    with pytest.raises(ConfigError, match="give it a token"):
        Dashboard(folder, "0.0.0.0:0")
    with Dashboard(folder, "0.0.0.0:0", token=True) as board:
        assert board.token and len(board.token) >= 24 and f"?token={board.token}" in board.url
        base = f"http://127.0.0.1:{board.port}/"
        assert get(base + "api/state")[0] == 401
        assert get(base + "api/state", token="wrong-token-of-some-length")[0] == 401
        assert get(base + "api/state", token=board.token)[0] == 200
        assert get(base + f"api/state?token={board.token}")[0] == 200  # what the page's own requests carry
        assert get(base)[0] == 401


def test_live_figures_come_from_the_running_server(tmp_path):
    with Dashboard(run_folder(tmp_path), "127.0.0.1:0", live=lambda: {"devices_connected": 7}) as board:
        assert json.loads(get(board.url + "api/state")[1])["live"] == {"devices_connected": 7}


def test_the_command(tmp_path, capsys):
    assert main(["dashboard", str(run_folder(tmp_path)), "--address", "127.0.0.1:0", "--for", "0.3"]) == 0
    assert "dashboard: http://127.0.0.1:" in capsys.readouterr().out
    assert main(["dashboard", str(tmp_path / "missing")]) == 2
    short = tmp_path / "token"
    short.write_text("abc\n")
    assert (
        main(["dashboard", str(tmp_path / "run"), "--address", "0.0.0.0:0", "--dashboard-token", str(short)])
        == 2
    )
