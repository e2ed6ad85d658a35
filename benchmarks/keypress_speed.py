"""From a temperature keypress to the repainted soft-target bars, in headless Chromium (not a timed
test; prints one JSON object).

    .venv/bin/python benchmarks/keypress_speed.py [--presses 20] [--width 1400]

Starts `kdviz app` on the default view (the shipped teacher and student, the bundled mnist5k test
split) in a fresh KDVIZ_HOME, opens Soft targets, then presses ArrowRight / ArrowLeft on the
sidebar's Temperature slider in turn. Each press is timed from the key event to the moment the
bar chart's plotted values differ from those before it (Plotly has redrawn the chart with the new
T's soft targets): the whole round trip a user sees, browser, websocket and server rerun. The
"settled" figures run on to the end of the rerun with every chart drawn (the gallery strip and the
open tab's charts, which the page sends after the bars).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from start_speed import CHROMIUM_ARGS, IDLE, REPO, _port, _wait_health

BARS = """() => {
    const el = document.querySelector('.st-key-soft_bars .js-plotly-plot');
    return el && el.data ? JSON.stringify(el.data.map((trace) => trace.y)) : '';
}"""


def measure(presses: int, width: int) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    port = _port()
    with tempfile.TemporaryDirectory(prefix="kdviz-keys-") as home, sync_playwright() as pw:
        env = {**os.environ, "KDVIZ_HOME": home}
        command = [sys.executable, "-m", "kdviz", "app", "--port", str(port)]
        start = time.perf_counter()
        server = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            _wait_health(port, server, start)
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function(IDLE, timeout=180_000)
            slider = page.locator(".st-key-T input[type=range]")
            times, settled = [], []
            for i in range(presses):
                before = page.evaluate(BARS)
                slider.focus()
                begin = time.perf_counter()
                page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
                page.wait_for_function(
                    f"() => ({BARS})() !== {json.dumps(before)}", timeout=30_000, polling="raf"
                )
                times.append(1000 * (time.perf_counter() - begin))
                page.wait_for_function(IDLE, timeout=30_000, polling="raf")
                settled.append(1000 * (time.perf_counter() - begin))
        finally:
            browser.close()
            server.terminate()
            server.wait(timeout=30)
    times.sort()
    settled.sort()
    return {
        "presses": presses,
        "keypress_to_repaint_ms_median": round(statistics.median(times), 1),
        "keypress_to_repaint_ms_p90": round(times[int(0.9 * (len(times) - 1))], 1),
        "keypress_to_repaint_ms_max": round(times[-1], 1),
        "keypress_to_settled_ms_median": round(statistics.median(settled), 1),
        "keypress_to_settled_ms_p90": round(settled[int(0.9 * (len(settled) - 1))], 1),
        "load_average": round(os.getloadavg()[0], 1),
        "width": width,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    print(json.dumps(measure(args.presses, args.width)))


if __name__ == "__main__":
    main()
