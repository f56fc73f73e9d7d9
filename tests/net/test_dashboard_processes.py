"""`shoal server --dashboard`: a live federation's page, read while real devices train."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.net.procs import CONFIG, free_port, records, shoal, stop, wait_for

pytestmark = pytest.mark.slow


def test_the_dashboard_follows_a_live_federation(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.replace("rounds = 8", "rounds = 12"))
    address, board, out = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", tmp_path / "out"
    server = shoal(
        "server", "--config", str(config), "--address", address, "--out", str(out), "--insecure", "--quiet",
        "--experiment", "--min-clients", "3", "--dashboard", board, log=tmp_path / "server.log",
    )  # fmt: skip
    clients = [
        shoal("client", "--server", address, "--config", str(config), "--client-id", str(c), "--insecure",
              "--experiment", "--give-up", "60", log=tmp_path / f"c{c}.log")
        for c in range(4)
    ]  # fmt: skip
    seen: list[dict] = []

    def state() -> dict:
        with urllib.request.urlopen(f"http://{board}/api/state", timeout=5) as response:
            return json.loads(response.read())

    def live_round() -> bool:
        try:
            now = state()
        except OSError:
            return False  # not listening yet
        seen.append(now)
        return bool(now["records"])

    try:
        wait_for(live_round, 120, "a round on the dashboard with the devices connected")
        assert server.wait(timeout=240) == 0, (tmp_path / "server.log").read_text()
    finally:
        stop(server, *clients)
    assert "dashboard: http://127.0.0.1:" in (tmp_path / "server.log").read_text()
    mid = seen[-1]
    assert mid["planned_rounds"] == 12 and mid["summary"] is None  # read while the run was going
    assert max((s["live"] or {}).get("devices_connected", 0) for s in seen) >= 1  # the server's own count
    logged = records(out / "metrics.jsonl")
    assert mid["records"] == logged[: len(mid["records"])]  # the counts are metrics.jsonl's
