"""Screenshots of the web UI for the README (docs/ui-*.png), from a running stack.

    make run                                   # in one terminal (demo traffic)
    .venv/bin/python scripts/ui_screenshots.py  # in another, after a minute or two

Options: --url (default http://127.0.0.1:6066), --out (default docs), --token (when the API
has one).  Uses Debian's chromium and chromedriver (scripts/install-deps.sh test), headless.
It picks the most recently finished task that was retried and the agent with the most
finished tasks today, through the API.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def sql(base: str, token: str, query: str) -> list[list[object]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    body = json.dumps({"query": query}).encode()
    req = urllib.request.Request(f"{base}/api/sql", data=body, headers=headers)  # noqa: S310 - http(s) only
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        return json.load(r)["rows"]  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:6066")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--token", default=os.environ.get("TASKPULSE_API_TOKEN", ""))
    a = ap.parse_args()
    base, out = a.url.rstrip("/"), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    task = sql(base, a.token, "SELECT task_id FROM taskpulse.task_executions FINAL WHERE retry_count > 0 "
                              "AND outcome = 'success' ORDER BY finished_at DESC LIMIT 1")[0][0]  # fmt: skip
    agent = sql(base, a.token, "SELECT agent FROM taskpulse.agent_overview ORDER BY tasks_finished_today DESC "
                               "LIMIT 1")[0][0]  # fmt: skip
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    service = Service(executable_path="/usr/bin/chromedriver")
    d = webdriver.Chrome(service=service, options=opts)
    try:
        if a.token:
            d.get(f"{base}/")
            d.find_element(By.ID, "login-token").send_keys(a.token)
            d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        for name, fragment, height in (("overview", "", 1200), ("task", f"#task={task}", 1000),
                                       ("agent", f"#agent={agent}", 1000)):  # fmt: skip
            d.set_window_size(1440, height)
            d.get(f"{base}/{fragment}")
            deadline = time.monotonic() + 30
            while d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") != "1":
                if time.monotonic() > deadline:
                    raise SystemExit(f"the page at {base}/ showed no data in 30 s")
                time.sleep(0.3)
            time.sleep(1.5)
            d.save_screenshot(str(out / f"ui-{name}.png"))
            print(out / f"ui-{name}.png")
    finally:
        d.quit()
        service.stop()


if __name__ == "__main__":
    main()
