"""The page in a real headless Chromium against ``convergence run --dashboard``.

``convergence run --dashboard 0 --scenario sustained --duration 120 --db mem:// --seed 7``
runs as a real subprocess, in real time: the library scenario's genuine convergence
begins a minute in. Chromium (Debian's ``chromium`` driven through
``/usr/bin/chromedriver``, never a downloaded one) loads the page before it happens, and
the test watches the alert arrive over the event stream (the page is not reloaded),
opens its report, quarantines a station from the table and sees the station's
acknowledgement. (``--as-fast-as-possible`` would play the whole story in seconds and end
the run, and with it the page, before a browser could look; ``test_embedded.py`` checks
that such a run is pushed live too.) Screenshots are written under the test's tmp dir
and, when ``CONVERGENCE_ARTIFACTS`` names a folder, copied there (``docs/dashboard.png``
and ``docs/dashboard-report.png`` are made that way).

Skipped, with the reason, only where Chromium or its driver is not installed
(``apt-get install chromium chromium-driver``; CI's ``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergence.ground_stations.scenario_library import build

#: read at import: the session fixture hides the caller's CONVERGENCE_* variables from tests
ARTIFACTS = os.environ.get("CONVERGENCE_ARTIFACTS")
#: a genuine library scenario (a convergence in one region a minute in), and its seed
SCENARIO, SEED = "sustained", 7
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1600,1000")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="no Chromium here: install Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver; CI's .ci/run does)"),
]


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


class Run:
    """``convergence run --dashboard`` as a subprocess; its output read line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convergence.cli.main", "run", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s; output:\n"
                             + "".join(self.output)[-3000:])

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def _save_screenshot(driver: Any, path: Path) -> None:
    driver.save_screenshot(str(path))
    if ARTIFACTS:
        Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(ARTIFACTS) / path.name)


def test_a_live_alert_arrives_opens_its_report_and_a_station_is_quarantined(
        browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    story = build(SCENARIO, seed=SEED)
    genuine = story.genuine()[0]
    regions = {info.region for info in story.fleet}
    run = Run("--dashboard", "0", "--scenario", SCENARIO, "--duration", "120", "--db", "mem://",
              "--seed", str(SEED))
    try:
        m = run.wait_for(r"dashboard (http://127\.0\.0\.1:\d+/)\s+control token (\S+)", 40)
        url, token = m.group(1), m.group(2)
        browser.get(f"{url}#token={token}")
        # the alert comes a minute in (the genuine episode's start), plus a slow machine's margin
        wait = WebDriverWait(browser, genuine.start_s + 45, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        assert "#token" not in browser.current_url  # the token left the address bar
        browser.execute_script("window.__notReloaded = true;")

        # the genuine convergence, pushed while the page stays open
        assert not browser.find_elements(By.CSS_SELECTOR, ".alert")  # nothing yet
        row = wait.until(lambda d: next(iter(d.find_elements(
            By.CSS_SELECTOR, f'.alert[data-live="1"][data-region="{genuine.region}"]')), None))
        assert browser.execute_script("return window.__notReloaded === true;")
        level = row.get_attribute("data-level")
        assert level in ("warning", "converged")
        assert genuine.region in row.text and level in row.text.lower()
        report_id = row.get_attribute("data-report-id")
        assert re.fullmatch(r"rpt-[0-9a-f]{16}", report_id or "")
        run.wait_for(re.escape(report_id or "?"), 10)  # the same alert the run printed

        # the map and the meters show every region, the stations as dots
        assert len(browser.find_elements(By.CSS_SELECTOR, "#regions rect")) == len(regions)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#stations circle")) == len(story.fleet)
        for region in regions:
            assert browser.find_element(By.CSS_SELECTOR, f'.meter[data-region="{region}"]')

        # drill-down: the alert's report opens in the drawer
        row.click()
        wait.until(lambda d: d.find_element(By.ID, "drawer").is_displayed())
        assert browser.find_element(By.ID, "drawer").get_attribute("data-report-id") == report_id
        _save_screenshot(browser, tmp_path / "dashboard-report.png")
        browser.switch_to.frame(browser.find_element(By.ID, "report-frame"))
        body = wait.until(lambda d: d.find_element(By.TAG_NAME, "body").text or None)
        text = body.lower()  # headings may be upper-cased by the page's style
        assert "bottom line" in text and "what moved" in text and genuine.region in text
        assert report_id in body
        browser.switch_to.default_content()
        browser.find_element(By.ID, "drawer-close").click()
        _save_screenshot(browser, tmp_path / "dashboard.png")

        # quarantine a station from its row (two clicks) and see its acknowledgement
        browser.find_element(By.ID, "filter").send_keys(f"sensor {genuine.region}")
        target = wait.until(lambda d: next(iter(d.find_elements(
            By.CSS_SELECTOR, "#station-rows tr")), None))
        sid = target.get_attribute("data-station")
        button = target.find_element(By.CSS_SELECTOR, "td.act button")
        assert button.text == "Quarantine"
        button.click()
        assert button.text == "Confirm?"
        button.click()
        wait.until(lambda d: d.find_element(
            By.CSS_SELECTOR, f'#station-rows tr[data-station="{sid}"] td.cmd'
        ).get_attribute("data-ack") == "applied")
        state = browser.find_element(By.CSS_SELECTOR,
                                     f'#station-rows tr[data-station="{sid}"] td.state')
        wait.until(lambda d: state.get_attribute("data-state") == "quarantined")
        assert "applied" in browser.find_element(By.ID, "toast").text

        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe  # no script error, no missing asset
    finally:
        code = run.stop()
    assert code == 0, "".join(run.output)[-3000:]
    wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "ended")
