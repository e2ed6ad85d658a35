"""How fast the explorer answers, on 10,000 test images (not a timed test; prints a table).

    .venv/bin/python benchmarks/explorer_speed.py [--teacher NAME --student NAME] [--changes 20]

Measures, with a fresh KDVIZ_HOME (a cold logit cache):
  * start to first chart: AppTest's first run in this process (imports excluded: they are done
    before the clock starts), and, if Chromium is installed, `kdviz app` launched to the first
    Plotly chart drawn in the browser;
  * a temperature change: the median (and p90) over N changes of the server-side rerun of each
    explorer page, measured with AppTest (default Streamlit settings);
  * the resident memory of the process that ran the app.

The 10,000 images are the 5,000 bundled mnist5k digits and a copy shifted by one pixel, written
as IDX files and opened as `idx:FOLDER`. The checkpoints are the shipped mnist5k teacher and
distilled student when present, else two MLPs trained here for a few seconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
GRID_WALK = [1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0, 10.0, 12.5, 16.0, 20.0]
PAGES = {
    "Soft targets": None,
    "Class similarity": "kdviz/ui/class_similarity.py",
    "Teacher vs student": "kdviz/ui/teacher_student.py",
}


def _rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _write_idx(path: Path, array) -> None:
    """A plain (uncompressed) IDX file of uint8 data: magic 0x0000_08_NDIM, big-endian dims."""
    with path.open("wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype("uint8").tobytes())


def make_test_set(folder: Path) -> str:
    """10,000 28x28 test digits as IDX files in ``folder``; returns the dataset spec."""
    import numpy as np

    from kdviz import data

    parts = [data.load_dataset("mnist5k", split) for split in ("train", "val", "test")]
    images = np.concatenate([p.images.numpy()[:, 0] for p in parts])  # (5000, 28, 28)
    labels = np.concatenate([p.labels.numpy() for p in parts])
    shifted = np.roll(images, 1, axis=2)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / "t10k-images-idx3-ubyte", np.concatenate([images, shifted]))
    _write_idx(folder / "t10k-labels-idx1-ubyte", np.concatenate([labels, labels]))
    return f"idx:{folder}"


def checkpoints(teacher: str | None, student: str | None, home: Path) -> tuple[str, str]:
    """Shipped mnist5k checkpoints when present, else two quickly trained MLPs in KDVIZ_HOME."""
    from kdviz import models

    names = sorted(name for name, _, _ in models.list_checkpoints())
    teacher = teacher or ("mnist5k-teacher" if "mnist5k-teacher" in names else None)
    student = student or next((n for n in names if n.startswith("mnist5k-mlp800-distilled")), None)
    if teacher and student:
        return teacher, student
    import torch
    import torch.nn.functional as F

    from kdviz import data

    train = data.load_dataset("mnist5k", "train")
    x, y = train.normalized(), train.labels
    made = []
    for name, arch, steps in (
        ("bench-teacher", "mlp-256-256", 300),
        ("bench-student", "mlp-32", 150),
    ):
        torch.manual_seed(0)
        model = models.create_model(arch, 10, train.in_shape)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        for step in range(steps):
            batch = torch.arange(step * 128, step * 128 + 128) % len(y)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        card = models.ModelCard(
            name=name, arch=arch, num_classes=10, class_names=list(train.class_names),
            in_shape=list(train.in_shape), mean=list(train.mean), std=list(train.std), dataset="mnist5k",
        )  # fmt: skip
        models.save_checkpoint(model.eval(), card, home / "checkpoints" / name)
        made.append(name)
    return teacher or made[0], student or made[1]


def _summary(times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms   min {ms[0]:6.1f} ms"


def measure_floor(changes: int) -> list[float]:
    """The same slider loop on a two-element app: what AppTest and Streamlit cost on this machine."""
    from streamlit.testing.v1 import AppTest

    script = (
        "import streamlit as st\n"
        "t = st.sidebar.select_slider('Temperature', [1.0, 1.25, 1.6, 2.0], value=1.0, key='T')\n"
        "st.caption(f'T = {t}')\n"
    )
    at = AppTest.from_string(script).run()
    times = []
    for i in range(changes):
        begin = time.perf_counter()
        at.select_slider(key="T").set_value([1.25, 1.6][i % 2]).run()
        times.append(time.perf_counter() - begin)
    return times


def measure_apptest(view: dict[str, str], changes: int) -> dict[str, object]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import kdviz.ui.shell  # noqa: F401  (imports are not part of "start to first chart")

    at = AppTest.from_file(str(APP), default_timeout=300)
    for key, value in view.items():
        at.query_params[key] = value
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    if at.exception or at.error:
        raise SystemExit(f"the app failed: {[e.value for e in [*at.exception, *at.error]]}")
    assert at.get("plotly_chart"), "no chart on the first page"
    results: dict[str, object] = {"first": first}
    for page, path in PAGES.items():
        if path:
            at.switch_page(path).run()
        at.select_slider(key="T").set_value(1.0).run()  # warm: caches filled once per page
        at.select_slider(key="T").set_value(GRID_WALK[1]).run()
        times, cpu = [], []
        for i in range(changes):
            step = i % (2 * len(GRID_WALK) - 2)  # walk up the grid and back down
            t = (
                GRID_WALK[step]
                if step < len(GRID_WALK)
                else GRID_WALK[2 * len(GRID_WALK) - 2 - step]
            )
            t = t if t != at.select_slider(key="T").value else GRID_WALK[0]
            begin, begin_cpu = time.perf_counter(), time.process_time()
            at.select_slider(key="T").set_value(t).run()
            times.append(time.perf_counter() - begin)
            cpu.append(time.process_time() - begin_cpu)
            assert not at.exception, at.exception
        results[page] = times
        results[page + " cpu"] = cpu
    results["rss"] = _rss_mib()
    st.cache_data.clear()
    st.cache_resource.clear()
    return results


def measure_browser(
    view: dict[str, str], home: Path, cold: bool = True
) -> tuple[float, float, float] | None:
    """(seconds from `kdviz app` to the first drawn chart, seconds from opening the page
    on the ready server to that chart, server RSS MiB), or None without Chromium. ``cold``
    empties the logit cache first (the very first start); otherwise it is kept (every later
    start)."""
    chromium = next(
        (
            p
            for p in ("/usr/bin/chromium", os.environ.get("KDVIZ_CHROMIUM", ""))
            if p and Path(p).exists()
        ),
        None,
    )
    if chromium is None:
        return None
    from urllib.parse import urlencode

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = home / "cache"
    if cold and cache.exists():  # a cold logit cache, as on a first start
        import shutil

        shutil.rmtree(cache)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # `kdviz app` (what `make app` runs): Streamlit in-process, warming up torch and the
        # pages' modules while the browser loads the front end
        command = [sys.executable, "-m", "kdviz", "app", "--port", str(port)]
        start = time.perf_counter()
        server = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "KDVIZ_HOME": str(home)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/_stcore/health", timeout=1
                    ):
                        break
                except OSError:
                    if server.poll() is not None or time.perf_counter() - start > 120:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.05)
            ready = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/?{urlencode(view)}")
            page.wait_for_selector(
                "[data-testid=stPlotlyChart] .js-plotly-plot .main-svg", timeout=120_000
            )
            elapsed = time.perf_counter() - start
            page.wait_for_selector(
                "[data-testid=stApp][data-test-script-state=notRunning]", timeout=120_000
            )
            rss = _rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=20)
            browser.close()
    return elapsed, elapsed - (ready - start), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="teacher checkpoint (default: shipped mnist5k-teacher)")
    parser.add_argument("--student", help="student checkpoint (default: mnist5k-mlp800-distilled)")
    parser.add_argument("--changes", type=int, default=20, help="temperature changes per page")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdviz-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["KDVIZ_HOME"] = str(home)
        spec = make_test_set(Path(tmp) / "idx10k")
        teacher, student = checkpoints(args.teacher, args.student, home)
        view = {"dataset": spec, "teacher": teacher, "student": student}
        print(f"10,000 test images ({spec}); teacher {teacher}, student {student}\n")
        results = measure_apptest(view, args.changes)
        print(f"start to first chart (AppTest first run, cold caches):  {results['first']:.2f} s")
        browser = None if args.no_browser else measure_browser(view, home, cold=True)
        if browser:
            warm = measure_browser(view, home, cold=False)
            print("start to first chart (`kdviz app` -> chart drawn in Chromium):")
            print(
                f"  first start (logits computed):   {browser[0]:.2f} s  (page open -> chart {browser[1]:.2f} s)"
            )
            print(
                f"  later starts (logits on disk):   {warm[0]:.2f} s  (page open -> chart {warm[1]:.2f} s)"
            )
        load = os.getloadavg()[0]
        print(
            f"\ntemperature change, server-side rerun, {args.changes} changes (AppTest; load {load:.1f}):"
        )
        for page in PAGES:
            print(f"  {page:<20} wall  {_summary(results[page])}")
            print(f"  {'':<20} cpu   {_summary(results[page + ' cpu'])}")
        print(f"  {'(a 2-element app)':<20} wall  {_summary(measure_floor(args.changes))}")
        print("\nresident memory:")
        print(f"  AppTest process (the app ran in it):   {results['rss']:.0f} MiB")
        if browser:
            print(f"  streamlit server after the first page: {browser[2]:.0f} MiB")
        print("  (importing torch alone takes ~0.7 GiB here: its CPU and CUDA libraries)")


if __name__ == "__main__":
    main()
