"""The load test's web page in a real browser (Debian's headless Chromium, driven by Selenium): the Host
field is prefilled with the default local server, a run started from the page against a real
tritonserver shows its host in the header and fills the texts/s and accuracy charts beside Locust's
own, and the page stops it; a host that is not a grpc:// or http:// URL is refused on the page."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from emotion_lab import loadtest
from emotion_triton.serving.preflight import free_port

PROJECT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
LOCUSTFILE = PROJECT / "loadtest" / "locustfile.py"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (build/system-packages.sh installs them as root)",
    ),
]


@pytest.fixture
def locust_web(emotion_data, tmp_path):
    """`locust -f loadtest/locustfile.py` with its web page on a free loopback port, no --host given."""
    port = free_port()
    command = [LOCUST, "-f", LOCUSTFILE, "--web-host", "127.0.0.1", "--web-port", str(port)]
    command += ["--data", emotion_data / "validation.txt", "--min-accuracy", "0", "--min-texts-per-second", "0"]
    log = open(tmp_path / "locust.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(part) for part in command], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "locust.log").read_text()
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the page is (re)rendering: try again
            value = None
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"the page never showed {what}")


def test_a_run_started_from_the_page_charts_texts_per_second_and_accuracy(served, locust_web, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = served("distilbert")
    browser.get(locust_web)
    host = wait_for(lambda: browser.find_element(By.NAME, "host"), "the Host field")
    assert host.get_attribute("value") == loadtest.DEFAULT_HOST  # prefilled: the default local server
    assert "no host attribute" not in browser.find_element(By.TAG_NAME, "body").text

    def fill(name: str, value: str):
        field = browser.find_element(By.NAME, name)
        field.send_keys(Keys.CONTROL, "a")  # React owns the field: replace its text as a user would
        field.send_keys(value)
        assert field.get_attribute("value") == value, name

    # A host that is not a URL (Locust's page checks that) or not of a protocol of Triton's clients is
    # refused on the page, before any test starts.
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    start = lambda: browser.find_element(By.XPATH, "//form//button[@type='submit']").click()  # noqa: E731
    fill("host", server.grpc_url)
    start()
    wait_for(lambda: "Please use a valid url format" in body(), "Locust's own check of the Host field")
    fill("host", f"https://{server.grpc_url}")
    start()
    refused = f"host 'https://{server.grpc_url}': give Triton's address as a URL whose scheme is the protocol"
    wait_for(lambda: refused in body(), "the https host refused")

    target = f"grpc://{server.grpc_url}"
    for name, value in (("host", target), ("userCount", "2"), ("spawnRate", "2")):
        fill(name, value)
    start()

    # While it runs, the header names the server under test.
    header = lambda: browser.find_element(By.TAG_NAME, "header").text.split("\n")  # noqa: E731
    wait_for(lambda: header()[header().index("Host") + 1] == target, f"Host {target} in the header")
    assert "RUNNING" in [line.upper() for line in header()]
    browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Charts')]").click()

    def chart(key: str):
        figure = browser.find_element(By.ID, f"emotion-chart-{key}")
        points = int(figure.find_element(By.TAG_NAME, "polyline").get_attribute("data-points"))
        value = figure.find_element(By.CLASS_NAME, "emotion-value").text
        return (points, value) if points >= 3 else None

    # Locust's current rate of the texts entry lags a few seconds behind the first answers.
    rising = lambda: (c := chart("texts_per_second")) and float(c[1]) > 0 and c  # noqa: E731
    wait_for(rising, "a texts/s chart above 0")
    points, accuracy = wait_for(lambda: chart("accuracy"), "an accuracy chart of 3 points")
    assert re.fullmatch(r"\d+\.\d\d%", accuracy) and 0 <= float(accuracy[:-1]) <= 100
    # Beside Locust's own charts, on the same tab.
    beside = browser.execute_script(
        "return document.getElementById('emotion-charts').parentElement.querySelector('[_echarts_instance_]') !== null"
    )
    assert beside

    def stopped() -> bool:
        """Stopped, or Stop clicked (again: a click while the page re-renders the header can be lost).
        Locust's own state, which the page polls, counts too: the header's text can lag it by a poll."""
        if "STOPPED" in [line.upper() for line in header()]:
            return True
        state = browser.execute_script("return fetch('./stats/requests').then(r => r.json()).then(d => d.state)")
        if state == "stopped":
            return True
        for button in browser.find_elements(By.XPATH, "//button[contains(., 'Stop')]")[:1]:
            button.click()
        return False

    wait_for(stopped, "the run stopped")
    stopped = len(browser.execute_script("return fetch('./emotion/charts').then(r => r.json()).then(d => d.points)"))
    time.sleep(2.5)
    after = len(browser.execute_script("return fetch('./emotion/charts').then(r => r.json()).then(d => d.points)"))
    assert after == stopped  # no more points once stopped
