"""How long `kdviz app` takes to its first chart (and the server's CPU by then), against a bare
one-chart Streamlit app started the same way in the same run, and how long a fresh session takes
to open each page once the server is warm (not a timed test; prints a table).

    .venv/bin/python benchmarks/start_speed.py [--starts 3] [--width 1400]

Each start launches a new server process and times it from launch to the first Plotly chart drawn
in headless Chromium (launched beforehand, so the browser's own start is not counted). kdviz and
the bare app alternate, so both see the same load on the machine; the ratio of the medians is the
figure to read. The kdviz starts use one fresh KDVIZ_HOME: the first start is cold (the student's
logits are computed), the later ones read the logit cache as every later start does.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
BARE_APP = """import plotly.graph_objects as go
import streamlit as st

st.title("One chart")
st.plotly_chart(go.Figure(go.Bar(x=list("0123456789"), y=[0.1] * 10)))
"""
DRAWN = "[data-testid=stPlotlyChart] .js-plotly-plot .main-svg"
IDLE = """() => {
    const app = document.querySelector('[data-testid=stApp]');
    const charts = document.querySelectorAll('[data-testid=stPlotlyChart]');
    const drawn = document.querySelectorAll('[data-testid=stPlotlyChart] .main-svg');
    return app && app.dataset.testScriptState === 'notRunning' && charts.length > 0
        && drawn.length >= charts.length && !document.querySelector('[data-testid=stSkeleton]');
}"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_health(port: int, server: subprocess.Popen, start: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                return
        except OSError:
            if server.poll() is not None or time.perf_counter() - start > 180:
                raise SystemExit("the server did not start") from None
            time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; NaN off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_chart(browser, command: list[str], port: int, env: dict, width: int, pages=()):
    """(seconds from launching ``command`` to its first drawn chart, the server's CPU seconds by
    then); then, with the server warm, {page path: seconds from opening it in a fresh session to
    every chart drawn}."""
    context = browser.new_context(viewport={"width": width, "height": 1000})
    tab = context.new_page()
    start = time.perf_counter()
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    opens: dict[str, float] = {}
    try:
        _wait_health(port, server, start)
        tab.goto(f"http://127.0.0.1:{port}/")
        tab.wait_for_selector(DRAWN, timeout=180_000)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds(server.pid)
        tab.wait_for_function(IDLE, timeout=180_000)
        context.close()
        for path in pages:
            context = browser.new_context(viewport={"width": width, "height": 1000})
            tab = context.new_page()
            begin = time.perf_counter()
            tab.goto(f"http://127.0.0.1:{port}/{path}")
            tab.wait_for_function(IDLE, timeout=180_000)
            opens[path or "/"] = time.perf_counter() - begin
            context.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return (elapsed, cpu), opens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="starts of each app")
    parser.add_argument("--width", type=int, default=1400, help="browser window width")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("KDVIZ_CHROMIUM") or "/usr/bin/chromium"
    pages = ["", "class-similarity", "teacher-vs-student", "soft-targets", "", "present"]
    with tempfile.TemporaryDirectory(prefix="kdviz-start-") as tmp, sync_playwright() as pw:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(BARE_APP)
        env = {**os.environ, "KDVIZ_HOME": str(Path(tmp) / "home"), "PYTHONUNBUFFERED": "1"}
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        kdviz_times, bare_times, opens, kdviz_cpu, bare_cpu = [], [], {}, [], []
        for i in range(args.starts):
            port = _port()
            kd_cmd = [sys.executable, "-m", "kdviz", "app", "--port", str(port)]
            (seconds, cpu), page_opens = first_chart(
                browser, kd_cmd, port, env, args.width, pages if i == args.starts - 1 else ()
            )
            kdviz_times.append(seconds)
            kdviz_cpu.append(cpu)
            opens.update(page_opens)
            port = _port()
            bare_cmd = [
                sys.executable, "-m", "streamlit", "run", str(bare), "--server.port", str(port),
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none",
            ]  # fmt: skip
            last = i == args.starts - 1
            (seconds, cpu), bare_open = first_chart(
                browser, bare_cmd, port, env, args.width, ("",) if last else ()
            )
            bare_times.append(seconds)
            bare_cpu.append(cpu)
            if bare_open:
                opens["(bare app) /"] = bare_open["/"]
            print(
                f"start {i + 1}: kdviz app {kdviz_times[-1]:.2f} s, bare app {bare_times[-1]:.2f} s"
            )
        browser.close()
    kd, plain = statistics.median(kdviz_times), statistics.median(bare_times)
    print(f"\nlaunch -> first chart drawn in Chromium ({args.starts} starts each, median):")
    print(f"  kdviz app            {kd:6.2f} s   (first, cold logit cache: {kdviz_times[0]:.2f} s)")
    print(f"  bare one-chart app   {plain:6.2f} s")
    print(f"  ratio                {kd / plain:6.2f}x   (load average {os.getloadavg()[0]:.1f})")
    # On a busy machine the CPU the server spends before the first chart (torch's import, most of
    # kdviz's) sets the time more than how its work overlaps with the browser's.
    print(
        f"  server CPU by then   kdviz {statistics.median(kdviz_cpu):.2f} s, "
        f"bare {statistics.median(bare_cpu):.2f} s (median)"
    )
    print("\nfresh session, warm server: open -> every chart drawn")
    for path, seconds in opens.items():
        print(f"  {path:<22} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
