"""The README's dashboard screenshot: a short FedAvg run on digits, photographed mid-run
by headless Chromium (apt-get install chromium chromium-driver; selenium from the dev extra).

    .venv/bin/python scripts/dashboard_screenshot.py   # writes docs/figures/dashboard.png
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from shoal import config, experiment
from shoal.dashboard import Dashboard

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "dashboard.png"
RUN = {
    "rounds": 20, "seed": 0, "backend": "inprocess",
    "data": {"dataset": "digits", "num_clients": 20, "partition": "dirichlet", "dirichlet_alpha": 0.3,
             "holdout_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [32]}, "strategy": {"clients_per_round": 6},
    "trainer": {"lr": 0.1, "local_epochs": 1, "batch_size": 16},
    "eval": {"federated_eval_every": 2, "federated_eval_clients": 20},
}  # fmt: skip


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="shoal-dashboard-")) / "run"
    cfg = config.from_dict(RUN)
    out.mkdir()
    (out / "config.toml").write_text(config.to_toml(cfg))
    runner = threading.Thread(
        target=experiment.run, args=(cfg, out, [lambda r: time.sleep(0.4)]), daemon=True
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1500"):
        options.add_argument(flag)
    with Dashboard(out, "127.0.0.1:0") as board:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
        try:
            runner.start()
            driver.get(board.url)
            WebDriverWait(driver, 120).until(lambda d: int(d.find_element(By.ID, "round").text) >= 14)
            FIGURE.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(FIGURE))
        finally:
            driver.quit()
    runner.join()
    print(f"wrote {FIGURE}")


if __name__ == "__main__":
    main()
