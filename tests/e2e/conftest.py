"""Browser tests: a real `streamlit run app.py` server and headless Chromium (Playwright).

The server gets its own KDVIZ_HOME holding the tiny test checkpoints; pages are opened with
?dataset=digits&teacher=tiny-teacher&student=tiny-student, so shipped checkpoints do not matter.
Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), never a Playwright download.
Screenshots go to $KDVIZ_SCREENSHOTS, default <repo>/screenshots/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kdviz_tiny import STUDENT, TEACHER, make_tiny_checkpoints

REPO = Path(__file__).resolve().parents[2]
VIEW = f"dataset=digits&teacher={TEACHER}&student={STUDENT}"
WIDTH, HEIGHT = 1400, 1000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("KDVIZ_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("KDVIZ_SCREENSHOTS") or REPO / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def run_app(home: Path) -> Iterator[str]:
    """`streamlit run app.py` with KDVIZ_HOME=home on a free port; yields its base URL once
    healthy, and stops the process on exit."""
    port = _free_port()
    env = {**os.environ, "KDVIZ_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"),
        "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with (home / "server.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the app did not start: {(home / 'server.log').read_text()[-2000:]}"
                    )
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[str]:
    """Base URL of a running app; the process is killed at teardown."""
    home = tmp_path_factory.mktemp("e2e_home")
    make_tiny_checkpoints(home / "checkpoints")
    with run_app(home) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    tab = context.new_page()
    yield tab
    context.close()


def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until the script has run and every Plotly chart on the page is drawn."""
    page.wait_for_selector(
        "[data-testid=stApp][data-test-script-state=notRunning]", timeout=timeout
    )
    page.wait_for_function(
        """() => {
            const charts = document.querySelectorAll('[data-testid=stPlotlyChart]');
            const drawn = document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot .main-svg');
            return charts.length > 0 && drawn.length >= charts.length
                && !document.querySelector('[data-testid=stSkeleton]');
        }""",
        timeout=timeout,
    )
    page.wait_for_timeout(300)  # let Plotly finish its layout pass


def chart_data(page, key: str) -> list[dict]:
    """The traces a keyed Plotly chart draws in the browser (Plotly's gd._fullData, where the
    base64 arrays of the spec are decoded)."""
    return page.evaluate(
        """key => {
            const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
            if (!gd || !gd._fullData) return null;
            return gd._fullData.map(t => ({
                name: t.name, y: t.y ? Array.from(t.y) : [],
                customdata: t.customdata ? Array.from(t.customdata) : null,
            }));
        }""",
        key,
    )


def wait_chart_change(page, key: str, before: list[dict], timeout: float = 30_000) -> list[dict]:
    """Wait until a chart's traces differ from ``before``; return the new traces."""
    deadline = time.monotonic() + timeout / 1000
    while time.monotonic() < deadline:
        now = chart_data(page, key)
        if now is not None and now != before:
            wait_idle(page)
            return chart_data(page, key)
        page.wait_for_timeout(200)
    raise AssertionError(f"chart {key!r} did not change")


def move_temperature(page, key: str) -> None:
    """Focus the sidebar's Temperature slider and press ``key`` (e.g. "ArrowRight")."""
    thumb = page.locator(".st-key-T input[type=range]")
    thumb.focus()
    page.keyboard.press(key)
