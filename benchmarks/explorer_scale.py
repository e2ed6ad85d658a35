"""How the explorer copes with many classes: ImageNet-val size (50,000 x 1,000) logits by default.

    .venv/bin/python benchmarks/explorer_scale.py [--classes 1000 --images 50000] [--json]

Builds synthetic but structured logits (classes in a two-level hierarchy of latent clusters, a
teacher and a noisier student, labels), writes them as .npz files, registers them with
`kdviz import` in a temporary KDVIZ_HOME, and measures:
  * open_to_first_chart_s: `kdviz app` running and healthy, Chromium opens the view
    (dataset logits:TEACHER) -> the first Plotly chart drawn (open_to_navigation_s: -> the
    page list drawn, i.e. the front end is running and the server has answered;
    reopen_to_first_chart_s: the same view opened again in a new tab);
  * t_change_ms_median: per page (Soft targets, Class similarity), the median server-side rerun
    after a temperature change, measured with AppTest as benchmarks/explorer_speed.py does, once
    the background sweep of the temperature grid is done (grid_ready_s says when that was);
  * peak_rss_gb: the largest resident memory of the `kdviz app` process tree while Chromium
    opens both pages and moves T on each (and of the AppTest process, apptest_peak_rss_gb).
Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
T_WALK = [1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0, 10.0, 12.5, 16.0, 20.0]
PAGES = {"Soft targets": None, "Class similarity": "kdviz/ui/class_similarity.py"}
URLS = {"Soft targets": "", "Class similarity": "class-similarity"}  # the first page is "/"
TEACHER, STUDENT = "scale-teacher", "scale-student"


# --------------------------------------------------------------------------- synthetic logits


def make_logits(classes: int, images: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Teacher and student logits (images, classes) float32 with structure, labels, names.

    Each class has an embedding: its coarse group's (classes / 50 groups) + its fine group's
    (classes / 10) + its own direction. An image is its class embedding plus noise; logits are
    scaled dot products with every class embedding, so images lean to the classes of their
    groups (what class similarity should find). The student sees more noise.
    """
    rng = np.random.default_rng(seed)
    dim = 64
    coarse = max(2, classes // 50)
    fine = max(coarse, classes // 10)
    fine_of = np.arange(classes) * fine // classes  # (K,)
    coarse_of = fine_of * coarse // fine
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    g_coarse = unit(rng.standard_normal((coarse, dim)))
    g_fine = unit(rng.standard_normal((fine, dim)))
    own = unit(rng.standard_normal((classes, dim)))
    emb = unit(1.0 * g_coarse[coarse_of] + 0.8 * g_fine[fine_of] + 0.7 * own).astype(np.float32)
    labels = rng.permutation(np.arange(images) % classes).astype(np.int64)
    out: dict[str, np.ndarray] = {"labels": labels}
    for role, noise, scale in (("teacher", 0.17, 30.0), ("student", 0.22, 22.0)):
        logits = np.empty((images, classes), dtype=np.float32)
        for start in range(0, images, 8192):  # (chunk, dim) @ (dim, K): no full-size temporaries
            y = labels[start : start + 8192]
            x = emb[y] + noise * rng.standard_normal((len(y), dim)).astype(np.float32)
            logits[start : start + len(y)] = scale * (x @ emb.T)
        out[role] = logits
    names = [
        f"g{c:02d}.{f:03d}.{i:04d}" for i, (c, f) in enumerate(zip(coarse_of, fine_of, strict=True))
    ]
    out["class_names"] = np.asarray(names)
    return out


def write_and_import(folder: Path, arrays: dict[str, np.ndarray], env: dict[str, str]) -> None:
    """teacher.npz and student.npz, registered with `kdviz import` as TEACHER and STUDENT."""
    for role, name in (("teacher", TEACHER), ("student", STUDENT)):
        path = folder / f"{role}.npz"
        np.savez(
            path, logits=arrays[role], labels=arrays["labels"], class_names=arrays["class_names"]
        )
        command = [sys.executable, "-m", "kdviz", "import", str(path), "--name", name]
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"kdviz import failed: {done.stderr.strip() or done.stdout.strip()}")


# --------------------------------------------------------------------------- measurements


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except OSError:
            continue
    return total


class PeakRss:
    """Polls a process tree's resident memory every 50 ms in a thread; .peak in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(self.pid))
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(port: int, server: subprocess.Popen, limit: float = 180.0) -> None:
    start = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                return
        except OSError:
            if server.poll() is not None or time.perf_counter() - start > limit:
                raise SystemExit("the server did not start") from None
            time.sleep(0.05)


CHART = "[data-testid=stPlotlyChart] .js-plotly-plot .main-svg"
IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"


def _screenshots(page, folder: Path, stem: str) -> None:
    """The top of the page, then two screens further down (Streamlit scrolls its main block)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(3):
        if part:
            page.evaluate(
                "() => { const m = document.querySelector('[data-testid=stMain]');"
                " (m && m.scrollHeight > m.clientHeight ? m : document.scrollingElement)"
                ".scrollBy(0, 900); }"
            )
            page.wait_for_timeout(700)
        page.screenshot(path=str(folder / f"{stem}_{part + 1}.png"))


def measure_browser(view: dict[str, str], env: dict[str, str], shots: Path | None) -> dict:
    """open_to_first_chart_s and the server's peak RSS while both pages are used; screenshots
    of both pages at 1400 and 820 px wide into ``shots`` when given."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    command = [sys.executable, "-m", "kdviz", "app", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rss = PeakRss(server.pid)
    result: dict = {}
    try:
        _wait_healthy(port, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/{URLS['Soft targets']}?{urlencode(view)}")
            page.wait_for_selector("[data-testid=stSidebarNav]", timeout=180_000)
            result["open_to_navigation_s"] = time.perf_counter() - start  # front end running
            page.wait_for_selector(CHART, timeout=180_000)
            result["open_to_first_chart_s"] = time.perf_counter() - start
            page.wait_for_selector(IDLE, timeout=180_000)
            again = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()  # a second visit: server caches and browser cache warm
            again.goto(f"http://127.0.0.1:{port}/{URLS['Soft targets']}?{urlencode(view)}")
            again.wait_for_selector(CHART, timeout=180_000)
            result["reopen_to_first_chart_s"] = time.perf_counter() - start
            again.close()
            for name, url in URLS.items():
                for width in (1400, 820):
                    page.set_viewport_size({"width": width, "height": 1000})
                    page.goto(f"http://127.0.0.1:{port}/{url}?{urlencode({**view, 'T': '4'})}")
                    page.wait_for_selector(CHART, timeout=180_000)
                    page.wait_for_selector(IDLE, timeout=180_000)
                    page.wait_for_timeout(1500)  # let Plotly finish drawing
                    if shots is not None:
                        _screenshots(page, shots, f"scale_{name.lower().replace(' ', '_')}_{width}")
                for t in ("8", "2"):  # a couple of temperature changes through the URL
                    page.goto(f"http://127.0.0.1:{port}/{url}?{urlencode({**view, 'T': t})}")
                    page.wait_for_selector(IDLE, timeout=180_000)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        result["peak_rss_gb"] = rss.stop() / 1e9
    return result


def measure_apptest(view: dict[str, str], changes: int) -> dict:
    """Per page: median server-side rerun after a T change, once the grid sweep is done."""
    import resource

    from streamlit.testing.v1 import AppTest

    import kdviz.ui.shell  # noqa: F401  (imports are not part of any figure)
    from kdviz import scale

    at = AppTest.from_file(str(APP), default_timeout=600)
    for key, value in view.items():
        at.query_params[key] = value
    start = time.perf_counter()
    at.run()
    result: dict = {"apptest_first_run_s": time.perf_counter() - start}
    if at.exception or at.error:
        raise SystemExit(f"the app failed: {[e.value for e in [*at.exception, *at.error]]}")
    medians, p90s = {}, {}
    for page, path in PAGES.items():
        if path:
            at.switch_page(path).run()
            if at.exception or at.error:
                raise SystemExit(f"{page} failed: {[e.value for e in [*at.exception, *at.error]]}")
        if page == "Class similarity":
            begin = time.perf_counter()
            for grid in list(scale._LIVE):
                grid.done.wait(600)
            result["grid_ready_s"] = time.perf_counter() - begin + result["apptest_first_run_s"]
        at.select_slider(key="T").set_value(1.0).run()  # warm: caches filled once per page
        times = []
        for i in range(changes):
            t = (
                T_WALK[i % len(T_WALK)]
                if (i // len(T_WALK)) % 2 == 0
                else T_WALK[::-1][i % len(T_WALK)]
            )
            if t == at.select_slider(key="T").value:
                t = 1.0
            begin = time.perf_counter()
            at.select_slider(key="T").set_value(t).run()
            times.append(1000 * (time.perf_counter() - begin))
            assert not at.exception, at.exception
        medians[page] = statistics.median(times)
        p90s[page] = sorted(times)[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
    result["t_change_ms_median"] = medians
    result["t_change_ms_p90"] = p90s
    result["apptest_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    scale.stop_all()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--changes", type=int, default=20, help="temperature changes per page")
    parser.add_argument("--shots", type=Path, default=None, help="save screenshots here")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium part")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdviz-scale-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "KDVIZ_HOME": str(home)}
        os.environ["KDVIZ_HOME"] = str(home)
        arrays = make_logits(args.classes, args.images)
        accuracy = {
            role: float((arrays[role].argmax(1) == arrays["labels"]).mean())
            for role in ("teacher", "student")
        }
        write_and_import(Path(tmp), arrays, env)
        del arrays
        view = {"dataset": f"logits:{TEACHER}", "teacher": TEACHER, "student": STUDENT}
        result: dict = {"images": args.images, "classes": args.classes}
        result["teacher_accuracy"], result["student_accuracy"] = accuracy.values()
        if not args.no_browser and Path(CHROMIUM).exists():
            result.update(measure_browser(view, env, args.shots))
        result.update(measure_apptest(view, args.changes))
        result["load_average"] = os.getloadavg()[0]
        result["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:<24} {value}")


if __name__ == "__main__":
    main()
