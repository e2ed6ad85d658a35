"""Seconds from pressing Start on Distill to the first training-loss point in the run store.

Starts the page's default run (the shipped mnist5k teacher into a 2x800 MLP, with its baseline)
the way the Start button does, with torch already imported as it is in the app, prints each
stage the worker reports on the way, then cancels both runs.

    KDVIZ_HOME=$(mktemp -d) python scripts/first_point.py
"""

from __future__ import annotations

import time

from kdviz import jobs
from kdviz.engine import pick_device
from kdviz.runs import RunStore


def main() -> None:
    pick_device("cpu")  # torch and the engine are loaded in the app before Start is pressed
    store = RunStore()
    started = time.monotonic()
    runs = jobs.start_distill(jobs.default_config(device="cpu"), baseline=True, store=store)
    run_id, last, first = runs[0].id, None, None
    while time.monotonic() - started < 120:
        run = store.get(run_id)
        if (run.status, run.message) != last:
            last = (run.status, run.message)
            print(f"{time.monotonic() - started:5.1f} s  {run.status}: {run.message}")
        if store.metrics(run_id, names=["train/loss"]):
            first = time.monotonic() - started
            break
        time.sleep(0.05)
    print(f"first point after {first:.1f} s" if first else "no point within 120 s")
    for run in runs:
        jobs.cancel(run.id, store)
    jobs.wait([run.id for run in runs], store, timeout=60)


if __name__ == "__main__":
    main()
