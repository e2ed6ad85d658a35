"""A live run in a real browser: Start, watch the progress bar and the curves move with no input,
reload and find the same run, Cancel. Uses the e2e conftest's server (tiny digits checkpoints)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import VIEW, chart_data

pytestmark = pytest.mark.e2e

LOSS_CHART = "distill_curve_0"  # the training-loss chart of the live panel


def progress(page) -> float:
    """The step the student's progress bar shows ("... step 96/8000 ..."), or -1 without one.

    The step, not the bar's width: the bar moves in whole percent, too coarse for a long run."""
    text = page.evaluate(
        """() => {
            const bar = document.querySelector('[data-testid=stProgress]');
            return bar ? bar.innerText : '';
        }"""
    )
    match = re.search(r"step (\d+)/", text)
    return float(match.group(1)) if match else -1.0


def loss_points(page) -> int:
    traces = chart_data(page, LOSS_CHART) or []
    return sum(len(trace["y"]) for trace in traces)


def watch(page, until_advances: int, timeout: float) -> list[tuple[float, int]]:
    """(progress, curve points) sampled every 0.25 s, touching nothing, until both went up
    ``until_advances`` times (or ``timeout`` seconds passed)."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append((progress(page), loss_points(page)))
        if min(advances([s[0] for s in samples]), advances([s[1] for s in samples])) >= (
            until_advances
        ):
            break
        page.wait_for_timeout(250)
    return samples


def advances(values: list[float]) -> int:
    """How many times a sampled value went up."""
    return sum(b > a for a, b in zip(values, values[1:], strict=False))


def kill_worker(run_id: str) -> None:
    """Safety net: the worker of this test's run (found by its exact command line) must not
    outlive a failed test, as runs outlive the server by design."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv[-3:-1] == [b"worker", run_id.encode()]:
                os.kill(int(proc.name), signal.SIGKILL)


def test_a_live_run_advances_by_itself_and_survives_a_reload(server, page):
    page.goto(f"{server}/distill?{VIEW}")
    start = page.get_by_role("button", name="Start")
    start.wait_for(timeout=60_000)
    epochs = page.get_by_label("Epochs")
    epochs.fill("1000")  # far more than the test watches: it cancels the run
    epochs.press("Enter")
    width = page.get_by_label("Units per layer")  # mlp-30-30: quick steps even on a busy CPU
    width.fill("30")
    width.press("Enter")
    page.get_by_text("Also train a hard-label baseline").click()
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]")
    start.click()

    page.wait_for_url(re.compile(r"[?&]run="), timeout=30_000)
    run_id = parse_qs(urlparse(page.url).query)["run"][0]
    try:
        _watch_reload_cancel(page, run_id)
    finally:
        kill_worker(run_id)


def _watch_reload_cancel(page, run_id: str) -> None:
    page.get_by_text(f"Run {run_id}").wait_for(timeout=30_000)
    # with no input at all, the bar advances and the loss curve grows
    samples = watch(page, until_advances=2, timeout=90)
    assert advances([s[0] for s in samples]) >= 2, samples
    assert advances([s[1] for s in samples]) >= 2, samples
    points = max(s[1] for s in samples)

    # a reload keeps ?run= and re-attaches to the same, still running, run
    page.reload()
    page.get_by_text(f"Run {run_id}").wait_for(timeout=60_000)
    assert parse_qs(urlparse(page.url).query)["run"] == [run_id]
    samples = watch(page, until_advances=1, timeout=60)
    assert max(s[1] for s in samples) > points, samples

    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled at step").wait_for(timeout=30_000)
