"""The web UI in a real headless browser (Debian's chromium through its chromedriver, driven
by Selenium; nothing is downloaded), against a worker on the real broker and engine fed
with scripted traffic: the cards, the board's column counts and a task's timeline equal
what ClickHouse holds, a task moves columns after its next event, a firing alert shows, the
board filters, the token is exchanged for the session cookie, one poll feeds every browser,
the standalone `taskpulse api` serves the same page, and screenshots of the overview, a task timeline and an agent page
are saved as test artifacts (``test-artifacts/web-ui/``)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from pipeline.core import live
from pipeline.embedded import EmbeddedBroker
from pipeline.sdk import make_event
from tests.integration.conftest import ROOT, Worker, publish, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("TASKPULSE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "web-ui"
ROLES = {"TASKPULSE_ROLES": "ingest,correlate,alerts", "TASKPULSE_REORDER_WINDOW_S": "1"}


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless chromium at 1440×900; always quit (the driver and the browser), pass or fail."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: scripts/install-deps.sh test installs chromium chromium-driver"
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never reach the network
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,900", "--force-device-scale-factor=1", "--lang=en-US"):  # fmt: skip
        opts.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            service.stop()


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    return path


def eventually(driver: WebDriver, check: Callable[[], Any], what: str, timeout: float = 40) -> Any:
    """Wait for ``check`` in the page (re-rendered every poll: stale elements are retried)."""

    def attempt() -> Any:
        try:
            return check()
        except (StaleElementReferenceException, WebDriverException):
            return None

    return wait_for(attempt, timeout, what)


# ------------------------------------------------------------------ scripted traffic


def fleet(now_ms: int) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Tasks in every interesting state (events in event time up to ``now_ms``) and the
    follow-up events of the tasks the test moves later."""
    events: list[dict[str, Any]] = []

    def task(task_id: str, start: int, task_type: str, steps: list[tuple[int, str, dict[str, Any]]]) -> None:
        for offset, et, state in steps:
            events.append(make_event(et, task_id, {"task_type": task_type, **state}, timestamp=start + offset,
                                     metadata={"correlation_id": "ui-batch"}))  # fmt: skip

    created = {"group": "ui-batch", "requester_id": "u-7", "request": "Summarise the incident"}
    assign = {"agent_id": "researcher", "confidence": 0.91, "evaluations": {"researcher": 0.91, "writer": 0.4,
                                                                              "coder": 0.12}}  # fmt: skip
    base = now_ms - 120_000
    task("ui-done", base, "research", [
        (0, "task.created", created), (1000, "task.queued", {}), (2500, "task.assigned", assign),
        (3000, "task.started", {"agent_id": "researcher"}), (6000, "task.review", {"passed": True}),
        (7000, "task.completed", {"success": True}),
    ])  # fmt: skip
    task("ui-retry", base + 2000, "code", [
        (0, "task.created", created), (100, "task.queued", {}),
        (200, "task.assigned", {"agent_id": "coder", "confidence": 0.8}), (300, "task.started", {}),
        (1300, "task.failed", {"error": "rate limited", "will_retry": True, "retry_count": 0}),
        (2300, "task.queued", {}), (2400, "task.assigned", {"agent_id": "coder", "confidence": 0.8}),
        (2500, "task.started", {}), (5500, "task.completed", {"success": True}),
    ])  # fmt: skip
    task("ui-fail", base + 4000, "code", [
        (0, "task.created", created), (100, "task.assigned", {"agent_id": "writer", "confidence": 0.5}),
        (200, "task.started", {}), (2200, "task.failed", {"error": "invalid output schema"}),
    ])  # fmt: skip
    task("ui-skip", base + 5000, "review", [(0, "task.created", created), (900, "task.completed", {})])
    task("ui-exec", base + 6000, "research", [
        (0, "task.created", created), (100, "task.queued", {}), (300, "task.assigned", assign),
        (500, "task.started", {"agent_id": "researcher"}), (900, "task.progress", {"percentage": 40}),
    ])  # fmt: skip
    task("ui-queued", base + 7000, "code", [(0, "task.created", created), (100, "task.queued", {})])
    task("ui-paused", base + 8000, "review", [
        (0, "task.created", created), (100, "task.assigned", {"agent_id": "writer", "confidence": 0.6}),
        (200, "task.started", {}), (400, "task.paused", {}),
    ])  # fmt: skip
    for i, agent in enumerate(("researcher", "coder", "writer", "planner")):
        events.append(make_event("agent.online", agent, {}, timestamp=base + i))
        beat = {"cpu_percent": 20.0, "memory_mb": 512, "active_tasks": 1 if i < 3 else 0}
        events.append(make_event("agent.heartbeat", agent, beat, timestamp=now_ms - 500))
    events.append(make_event("agent.offline", "planner", {}, timestamp=now_ms - 400))
    later = {
        "ui-exec": [make_event("task.completed", "ui-exec", {"task_type": "research", "success": True},
                               timestamp=now_ms + 1000, metadata={"correlation_id": "ui-batch"})],
    }  # fmt: skip
    return events, later


def start(make_worker: Callable[..., Worker], broker: EmbeddedBroker, **env: str) -> tuple[Worker, dict[str, Any]]:
    w = make_worker(**ROLES, **env)
    w.token = env.get("TASKPULSE_API_TOKEN", "")
    w.start()
    now = int(time.time() * 1000)
    events, later = fleet(now)
    publish(broker, events)
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.tasks FINAL WHERE task_id LIKE 'ui-%'") == 7, 60,
             "the scripted tasks in ClickHouse")  # fmt: skip
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.task_executions FINAL WHERE task_id LIKE 'ui-%'") == 4,
             60, "the finished tasks' records")  # fmt: skip
    return w, later


# ------------------------------------------------------------------ what ClickHouse holds


def board_counts(w: Worker) -> dict[str, int]:
    sql, params = live.board_counts("taskpulse", live.BoardFilter())
    return {s: int(n) for s, n in w.sql(bind(sql, params))}


def bind(sql: str, params: dict[str, Any]) -> str:
    from pipeline.sinks.clickhouse import bind_parameters

    return bind_parameters(sql, params) if params else sql


def page_counts(driver: WebDriver) -> dict[str, int]:
    cols = driver.find_elements(By.CSS_SELECTOR, "#board .col")
    return {c.get_attribute("data-state"): int(c.find_element(By.CSS_SELECTOR, ".n").get_attribute("data-count"))
            for c in cols}  # fmt: skip


def click(driver: WebDriver, css: str) -> None:
    """Click an element of the live page (re-rendered every poll: a stale one is found again)."""
    eventually(driver, lambda: driver.find_element(By.CSS_SELECTOR, css).click() or True, f"a click on {css}")


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def load(driver: WebDriver, w: Worker, fragment: str = "") -> None:
    driver.get(f"{w.api}/{fragment}")
    eventually(driver, lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
               "the first snapshot on the page")  # fmt: skip


# ------------------------------------------------------------------ tests


ALERT_RULES = """
routing:
  high: [log]
rules:
  - name: ui_failures
    measure: failure_rate
    window: 5m
    op: ">"
    threshold: 0.1
    min_count: 1
    for: 1s
    severity: high
    annotations:
      summary: "failure rate {value} > {threshold}"
"""


def test_overview_board_timeline_and_agent_equal_clickhouse(
    make_worker: Callable[..., Worker], broker: EmbeddedBroker, browser: WebDriver, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(ALERT_RULES)
    w, later = start(make_worker, broker, TASKPULSE_ALERT_RULES=str(rules), TASKPULSE_ALERT_INTERVAL_S="0.5")
    load(browser, w)

    # the board: every column's count is ClickHouse's (all columns there, empty ones too)
    def board_agrees() -> bool:
        expected = board_counts(w)
        shown = page_counts(browser)
        return all(shown.get(s, -1) == expected.get(s, 0) for s in live.BOARD_STATES) and shown["QUEUED"] >= 1

    eventually(browser, board_agrees, "the board's column counts to equal ClickHouse's")
    shown = eventually(browser, lambda: page_counts(browser), "the board's counts")
    assert shown["COMPLETED"] >= 3 and shown["FAILED"] >= 1 and shown["EXECUTING"] >= 1 and shown["PAUSED"] >= 1

    # the cards
    def cards_agree() -> bool:
        active = w.scalar("SELECT count() FROM taskpulse.tasks FINAL WHERE NOT finished")
        done, finished = w.sql(
            "SELECT countIf(outcome = 'success'), count() FROM taskpulse.task_executions FINAL "
            "WHERE finished_at >= toStartOfDay(now64(3, 'UTC'))"
        )[0]
        status = dict(w.sql("SELECT status, count() FROM taskpulse.agent_status FINAL GROUP BY status"))
        firing = len(w.sql(bind(*live.firing_alerts("taskpulse"))))
        return (
            text(browser, "k-active") == f"{active:,}" and text(browser, "k-done") == f"{done:,}"
            and text(browser, "k-rate") == pct(done / finished)
            and text(browser, "k-online") == str(status.get("online", 0))
            and text(browser, "k-busy") == str(status.get("busy", 0))
            and text(browser, "k-offline") == str(status.get("offline", 0))
            and text(browser, "k-alerts") == str(firing)
        )  # fmt: skip

    # the failure-rate alert fires: the banner names it, the card counts what ClickHouse has firing
    eventually(browser, lambda: "ui_failures" in text(browser, "alerts") and text(browser, "k-alerts") == "1",
               "the firing alert on the page", timeout=60)  # fmt: skip
    assert text(browser, "alert-list").startswith("HIGH ui_failures failure rate")
    eventually(browser, cards_agree, "the cards to equal ClickHouse's numbers")
    assert text(browser, "k-offline") == "1"  # planner went offline
    eventually(browser, lambda: browser.find_element(By.CSS_SELECTOR, '[data-agent="planner"]'), "the agent grid")
    planner = eventually(browser, lambda: browser.find_element(By.CSS_SELECTOR, '[data-agent="planner"]').text,
                         "planner's card")  # fmt: skip
    assert "offline" in planner and "–\nsuccess" in planner  # no task finished today: no rate, not 0 %
    screenshot(browser, "overview")

    # a task's timeline: its events in event time, the durations, the retry, every agent's confidence
    click(browser, '#board [data-task="ui-retry"]')
    eventually(browser, lambda: browser.find_element(By.ID, "detail").get_attribute("data-loaded") == "task:ui-retry",
               "the task page")  # fmt: skip
    rows = browser.find_elements(By.CSS_SELECTOR, "#detail .timeline > tbody > tr[data-event]")
    events = w.sql("SELECT event_type, toUnixTimestamp64Milli(event_time) FROM taskpulse.events "
                   "WHERE entity_id = 'ui-retry' ORDER BY event_time")  # fmt: skip
    assert [r.find_elements(By.TAG_NAME, "td")[1].text.split()[0] for r in rows] == [e for e, _ in events]
    assert [r.find_element(By.CSS_SELECTOR, ".when").text for r in rows] == [clock(t) for _, t in events]
    wait_ms, run_ms, retries = w.sql("SELECT queue_wait_ms, execution_ms, retry_count FROM "
                                     "taskpulse.task_executions FINAL WHERE task_id = 'ui-retry'")[0]  # fmt: skip
    facts = facts_of(browser)
    assert (facts["QUEUE WAIT"], facts["EXECUTION"], facts["RETRIES"]) == (ms(wait_ms), ms(run_ms), str(retries))
    assert (wait_ms, run_ms, retries) == (200.0, 5200.0, 1)  # the script's own arithmetic
    screenshot(browser, "task-timeline-retry")

    # an invalid transition is marked, as the correlator counted it
    browser.get(f"{w.api}/#task=ui-skip")
    eventually(browser, lambda: browser.find_element(By.ID, "detail").get_attribute("data-loaded") == "task:ui-skip",
               "the task page")  # fmt: skip
    invalid = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#detail .timeline tr.invalid")]
    counted = w.scalar("SELECT invalid_transitions FROM taskpulse.tasks FINAL WHERE task_id = 'ui-skip'")
    assert counted == len(invalid) == 1
    assert "invalid CREATED → COMPLETED" in invalid[0]

    # the assignment with every agent's confidence
    browser.get(f"{w.api}/#task=ui-done")
    eventually(browser, lambda: browser.find_element(By.ID, "detail").get_attribute("data-loaded") == "task:ui-done",
               "the task page")  # fmt: skip
    conf = [r.text.split() for r in browser.find_elements(By.CSS_SELECTOR, "#detail table.confidence tbody tr")]
    assert [(c[0], c[-1]) for c in conf] == [("researcher", "0.91"), ("writer", "0.40"), ("coder", "0.12")]
    assert "chosen" in conf[0] and not any("chosen" in c for c in conf[1:])
    facts = facts_of(browser)
    assert (facts["QUEUE WAIT"], facts["EXECUTION"], facts["REVIEW"], facts["CYCLE"]) == ("2.00 s", "4.00 s",
                                                                                          "1.00 s", "7.00 s")
    screenshot(browser, "task-timeline")

    # an agent's page: its recent executions, as task_executions has them
    browser.get(f"{w.api}/#agent=coder")
    eventually(browser, lambda: browser.find_element(By.ID, "detail").get_attribute("data-loaded") == "agent:coder",
               "the agent page")  # fmt: skip
    tasks = [r.find_elements(By.TAG_NAME, "td")[1].text
             for r in browser.find_elements(By.CSS_SELECTOR, "#detail table.executions tbody tr")]  # fmt: skip
    assert tasks == [t for (t,) in w.sql("SELECT task_id FROM taskpulse.task_executions FINAL WHERE agent = 'coder' "
                                         "ORDER BY finished_at DESC, task_id")]  # fmt: skip
    assert tasks == ["ui-retry"]
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-agent canvas"), "the utilization chart"
    screenshot(browser, "agent")

    # back on the board, a task moves from EXECUTING to COMPLETED after its next event
    browser.find_element(By.ID, "detail-close").click()
    column = lambda: browser.find_element(By.CSS_SELECTOR, '#board [data-task="ui-exec"]').find_element(  # noqa: E731
        By.XPATH, "ancestor::section[@data-state]").get_attribute("data-state")
    assert eventually(browser, column, "ui-exec on the board") == "EXECUTING"
    before = eventually(browser, lambda: page_counts(browser), "the board's counts")
    publish(broker, later["ui-exec"])
    eventually(browser, lambda: column() == "COMPLETED", "ui-exec to move to the COMPLETED column")
    eventually(browser, board_agrees, "the board's counts after the move")
    after = eventually(browser, lambda: page_counts(browser), "the board's counts")
    assert (after["EXECUTING"], after["COMPLETED"]) == (before["EXECUTING"] - 1, before["COMPLETED"] + 1)


def test_board_filters_by_agent_task_type_and_group(
    make_worker: Callable[..., Worker], broker: EmbeddedBroker, browser: WebDriver
) -> None:
    w, _ = start(make_worker, broker)
    load(browser, w)
    from selenium.webdriver.support.select import Select

    eventually(browser, lambda: "coder" in [o.text for o in Select(browser.find_element(By.ID, "f-agent")).options],
               "the agent filter's options")  # fmt: skip
    Select(browser.find_element(By.ID, "f-agent")).select_by_value("writer")

    def only_writer() -> bool:
        ids = {e.get_attribute("data-task") for e in browser.find_elements(By.CSS_SELECTOR, "#board [data-task]")}
        expected = {t for (t,) in w.sql("SELECT task_id FROM taskpulse.tasks FINAL WHERE agent = 'writer'")}
        return ids == expected == {"ui-fail", "ui-paused"}

    eventually(browser, only_writer, "the board filtered to writer's tasks")
    assert "agent = writer" in text(browser, "board-note")
    browser.find_element(By.ID, "f-clear").click()
    Select(browser.find_element(By.ID, "f-task_type")).select_by_value("review")
    eventually(browser, lambda: sum(page_counts(browser).values()) == 2, "the board filtered to review tasks")
    browser.find_element(By.ID, "f-clear").click()
    Select(browser.find_element(By.ID, "f-group")).select_by_value("ui-batch")
    eventually(browser, lambda: sum(page_counts(browser).values()) == 7, "the board filtered to the group")
    pct_done = w.scalar("SELECT percentage FROM taskpulse.task_groups WHERE group_key = 'ui-batch'")
    eventually(browser, lambda: f"{pct_done:g} % done" in browser.find_element(
        By.CSS_SELECTOR, '#groups [data-group="ui-batch"]').text, "the group's progress")  # fmt: skip


def test_token_is_exchanged_once_for_an_httponly_session_cookie(
    make_worker: Callable[..., Worker], broker: EmbeddedBroker, browser: WebDriver
) -> None:
    token = "ui-test-token-5d7e1f0b8c"
    w, _ = start(make_worker, broker, TASKPULSE_API_TOKEN=token)
    browser.get(f"{w.api}/")
    eventually(browser, lambda: browser.find_element(By.ID, "login").is_displayed(), "the token dialog")
    browser.find_element(By.ID, "login-token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    eventually(browser, lambda: "token" in text(browser, "login-error"), "the refusal")
    browser.find_element(By.ID, "login-token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    eventually(browser, lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
               "the live page after signing in")  # fmt: skip
    cookie = browser.get_cookie("taskpulse_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert token not in str(cookie["value"])
    assert "taskpulse_session" not in browser.execute_script("return document.cookie")  # not readable by scripts
    # a reload goes straight to the page: the cookie, not the token, authenticates
    load(browser, w)
    assert not browser.find_element(By.ID, "login").is_displayed()
    assert token not in browser.page_source


# ------------------------------------------------------------------ formatting, as app.js does it


def pct(x: float) -> str:
    return f"{x * 100:.0f} %" if x >= 0.995 or x == 0 else f"{x * 100:.1f} %"


def ms(v: float | None) -> str:
    if v is None:
        return "–"
    if v < 1000:
        return f"{round(v)} ms"
    if v < 60_000:
        return f"{v / 1000:.2f} s" if v < 10_000 else f"{v / 1000:.1f} s"
    return f"{v / 60_000:.1f} min"


def clock(t_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t_ms / 1000)) + f".{t_ms % 1000:03d} UTC"


def facts_of(driver: WebDriver) -> dict[str, str]:
    out = {}
    for div in driver.find_elements(By.CSS_SELECTOR, "#detail .facts > div"):
        out[div.find_element(By.TAG_NAME, "dt").text.strip()] = div.find_element(By.TAG_NAME, "dd").text.strip()
    return out


def test_stream_is_shared_and_an_open_stream_does_not_hold_up_shutdown(
    make_worker: Callable[..., Worker], broker: EmbeddedBroker
) -> None:
    """Three browsers watching: every one gets the same snapshots (one poll), and SIGTERM
    still stops the worker promptly (an EventSource never ends by itself)."""
    import http.client
    import json
    import threading

    w, _ = start(make_worker, broker)
    host, port = w.api.removeprefix("http://").split(":")
    snapshots: list[list[dict[str, Any]]] = [[], [], []]
    conns = []

    def watch(i: int) -> None:
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        conns.append(c)
        c.request("GET", "/api/v1/stream", headers={"Accept": "text/event-stream"})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream")
        event = ""
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                snapshots[i].append(json.loads(line[6:]))
                if len(snapshots[i]) == 3:
                    return

    threads = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(len(s) == 3 for s in snapshots), [len(s) for s in snapshots]
    # the browsers saw the same polls: their snapshots' times overlap (not one poll each)
    times = [{s["now_ms"] for s in snap} for snap in snapshots]
    assert times[0] & times[1] & times[2], times
    status = w.status()
    assert status is not None and 0 < status["ui"]["polls"] < sum(len(s) for s in snapshots), status["ui"]
    board = {c["state"]: c["count"] for c in snapshots[0][-1]["board"]["columns"]}
    assert {s: n for s, n in board.items() if n} == board_counts(w)

    # a browser still connected while the worker is told to stop
    holder = http.client.HTTPConnection(host, int(port), timeout=60)
    holder.request("GET", "/api/v1/stream")
    assert holder.getresponse().status == 200
    assert w.proc is not None
    w.proc.terminate()
    w.proc.wait(45)  # Worker.stop would SIGKILL after 30 s: a held-up shutdown fails here
    assert w.proc.returncode != -9
    holder.close()
    for c in conns:
        c.close()


def test_the_standalone_api_serves_the_same_page(
    make_worker: Callable[..., Worker], broker: EmbeddedBroker, browser: WebDriver, tmp_path: Path
) -> None:
    """`taskpulse api` (the compose `api` service) alone, on the database the worker filled:
    the page, its stream and a task's timeline, from the read-only side."""
    import subprocess
    import sys

    from pipeline.embedded import free_port

    w, _ = start(make_worker, broker)
    expected = board_counts(w)
    w.stop()  # the embedded engine is one process's: the API opens it once the worker is gone
    port = free_port()
    env = {**w.env, "TASKPULSE_API_PORT": str(port), "TASKPULSE_ROLES": ""}
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - the child's, closed below
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "api"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    api = Worker(env, tmp_path / "api.log", f"http://127.0.0.1:{port}", [], proc=proc)
    try:
        wait_for(lambda: api.status() or proc.poll() is not None, 60, "the standalone API")
        assert proc.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
        load(browser, api)
        eventually(browser, lambda: {s: n for s, n in page_counts(browser).items() if n} == expected,
                   "the board served by the standalone API")  # fmt: skip
        assert board_counts(api) == expected
        browser.get(f"{api.api}/#task=ui-retry")
        eventually(browser, lambda: browser.find_element(By.ID, "detail").get_attribute("data-loaded")
                   == "task:ui-retry", "the task page")  # fmt: skip
        assert len(browser.find_elements(By.CSS_SELECTOR, "#detail .timeline > tbody > tr[data-event]")) == 9
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
