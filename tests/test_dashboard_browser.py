"""The dashboard in a real browser: headless Chromium follows a live run.

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver; `.ci/run`
installs them) and selenium (the dev extra); skipped with that message where they are absent.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from shoal import config, experiment
from shoal.dashboard import Dashboard

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "headless Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is in the dev extra: ./scripts/setup dev"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROUNDS = 6
RUN = {
    "rounds": ROUNDS,
    "seed": 0,
    "backend": "inprocess",
    "data": {"dataset": "digits", "num_clients": 10},
    "model": {"name": "mlp", "hidden": [16]},
    "strategy": {"clients_per_round": 4},
    "trainer": {"lr": 0.3, "local_epochs": 1, "batch_size": 16},
}


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


def test_the_page_follows_a_live_run_and_agrees_with_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    cfg = config.from_dict(RUN)
    out.mkdir()
    (out / "config.toml").write_text(config.to_toml(cfg))
    go = threading.Event()

    def train() -> None:  # the run, slowed so the page can be seen changing between rounds
        go.wait(30)
        experiment.run(cfg, out, [lambda record: time.sleep(0.6)])

    with Dashboard(out, "127.0.0.1:0", token=True) as board:
        runner = threading.Thread(target=train, daemon=True)
        runner.start()
        driver = browser()
        try:
            driver.get(board.url)
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.find_element(By.ID, "planned").text == str(ROUNDS))
            go.set()
            wait.until(lambda d: d.find_element(By.ID, "round").text == "2")  # rounds arrive live
            early = int(
                driver.find_element(By.CSS_SELECTOR, "#plot-accuracy polyline").get_attribute("data-points")
            )
            wait.until(lambda d: d.find_element(By.ID, "status").text == "finished")
            runner.join(30)
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            curve = driver.find_element(By.CSS_SELECTOR, '#plot-accuracy polyline[data-label="central test"]')
            assert int(curve.get_attribute("data-points")) == len(records) == ROUNDS > early  # the curve grew
            last = records[-1]
            assert driver.find_element(By.ID, "round").text == str(ROUNDS)
            assert (
                driver.find_element(By.ID, "clients").text
                == f"{last['clients_completed']} / {last['clients_selected']}"
            )
            assert driver.find_element(By.ID, "accuracy").text == f"{last['test_accuracy']:.4f}"
            bytes_up = sum(r["bytes_up"] for r in records) / 1e6
            assert driver.find_element(By.ID, "bytes").text.startswith(f"{bytes_up:.2f} / ")
            devices = driver.find_element(By.CSS_SELECTOR, '#plot-clients polyline[data-label="completed"]')
            assert int(devices.get_attribute("data-points")) == ROUNDS
        finally:
            driver.quit()


def test_what_a_device_reports_is_shown_as_text_never_run(tmp_path):
    """A failure reason is the device's own words: markup in it must stay text."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("rounds = 3\n")
    reason = "<img src=x onerror=\"document.title='owned'\">"
    record = {"round": 1, "clients_failed": 1, "failures": [f"d1: error: {reason}"]}
    (out / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    with Dashboard(out, "127.0.0.1:0") as board:
        driver = browser()
        try:
            driver.get(board.url)
            cell = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#failures td"))
            assert cell.text == f"error: {reason}"
            assert not driver.find_elements(By.CSS_SELECTOR, "#failures img")
            assert driver.title == "shoal dashboard"
        finally:
            driver.quit()
