"""Wall time of the Distill page's default run plus its hard-label baseline, from Start to both
finished, and how often their curves get new points while they train.

    python benchmarks/run_latency.py                      # teacher mnist5k-teacher, fresh KDVIZ_HOME
    python benchmarks/run_latency.py --teacher digits-teacher --json

It goes through the same path as the page (``jobs.start_distill``: two worker processes, the
queue, the run store), in a fresh KDVIZ_HOME, so the teacher's logits are computed cold, as on
a first run. The target on a 2-core CPU: both runs done in under 60 s, curves updated at least
once a second (the page polls the store every 0.5 s on top of the gaps reported here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="mnist5k-teacher")
    parser.add_argument("--epochs", type=int, default=None, help="default: the page's default")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--home", default="", help="KDVIZ_HOME to use (default: a fresh one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["KDVIZ_HOME"] = args.home or tempfile.mkdtemp(prefix="kdviz-bench-")

    from kdviz import jobs
    from kdviz.models import load_card
    from kdviz.runs import RunStore

    card = load_card(args.teacher)
    changes = {"dataset": card.dataset}
    if args.epochs:
        changes["epochs"] = args.epochs
    cfg = jobs.default_config(args.teacher, **changes)
    store = RunStore()
    started = time.perf_counter()
    runs = jobs.start_distill(cfg, baseline=not args.no_baseline, store=store)
    ids = [run.id for run in runs]
    counts = dict.fromkeys(ids, 0)
    updates: dict[str, list[float]] = {run_id: [] for run_id in ids}  # times new rows appeared
    while True:
        jobs.refresh(store)
        now = time.perf_counter() - started
        current = [store.get(run_id) for run_id in ids]
        for run in current:
            n = len(store.metrics(run.id))
            if n > counts[run.id]:
                counts[run.id] = n
                updates[run.id].append(now)
        if not any(run.active for run in current):
            break
        time.sleep(0.05)
    total = time.perf_counter() - started

    report = {"teacher": args.teacher, "config": cfg.to_dict(), "total_seconds": total, "runs": []}
    for run in current:
        times = updates[run.id]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        report["runs"].append(
            {
                "id": run.id,
                "role": run.role,
                "status": run.status,
                "device": run.device,
                "queued_seconds": run.started - run.created if run.started else None,
                "run_seconds": run.finished - run.started if run.started else None,
                "fit_seconds": run.metrics.get("seconds"),
                "test_accuracy": run.metrics.get("accuracy"),
                "agreement": run.metrics.get("agreement"),
                "curve_updates": len(times),
                "max_seconds_between_curve_updates": max(gaps, default=None),
            }
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{cfg.arch} student of {args.teacher}, {cfg.epochs} epochs, on {cfg.dataset}")
        for r in report["runs"]:
            gap = r["max_seconds_between_curve_updates"]
            print(
                f"  {r['role']:<9} {r['status']:<8} waited {r['queued_seconds']:5.1f} s  "
                f"ran {r['run_seconds']:5.1f} s (fit {r['fit_seconds'] or 0:5.1f} s)  "
                f"test acc {r['test_accuracy'] or 0:.2%}  curve updates {r['curve_updates']}, "
                f"longest gap {gap if gap is not None else float('nan'):.2f} s"
            )
        print(f"  start to both finished: {total:.1f} s on {runs[0].device}")
    return 0 if all(r["status"] == "done" for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
