"""How long opening an imported logits table takes, and how much resident memory it costs
(not a timed test; prints one line per repeat).

    .venv/bin/python benchmarks/logits_open.py [--rows 50000] [--classes 1000] [--repeats 3]

Imports a random (rows, classes) float32 table with labels into a fresh KDVIZ_HOME, then, in a
fresh Python process per repeat, times ``importers.load_logits_table`` and reads the process's
resident set (VmRSS) before and after the open, and after one pass over every value (the argmax
that an accuracy needs), so a lazily mapped table shows what it costs once it is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
import torch
from kdviz import importers

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss_mb()
t0 = time.perf_counter()
table = importers.load_logits_table(sys.argv[1])
opened = time.perf_counter() - t0
after_open = rss_mb()
t1 = time.perf_counter()
accuracy = float((table.logits.argmax(1) == table.labels).float().mean())
used = time.perf_counter() - t1
print(json.dumps({"open_s": opened, "rss_open_mb": after_open - before, "argmax_s": used,
                  "rss_used_mb": rss_mb() - before, "accuracy": accuracy}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "KDVIZ_HOME": home}
        source = Path(home) / "table.npz"
        make = (
            "import numpy as np, sys; rng = np.random.default_rng(0); "
            f"n, c = {args.rows}, {args.classes}; "
            "np.savez(sys.argv[1], logits=rng.standard_normal((n, c), dtype=np.float32), "
            "labels=rng.integers(0, c, n))"
        )
        subprocess.run([sys.executable, "-c", make, str(source)], check=True, env=env)
        importing = (
            "import sys; from kdviz import importers; importers.import_source(sys.argv[1], 'big')"
        )
        subprocess.run(
            [sys.executable, "-c", importing, str(source)], check=True, env=env, cwd=REPO
        )
        size = (Path(home) / "checkpoints" / "big.npz").stat().st_size
        print(f"table {args.rows:,} x {args.classes:,} float32, stored file {size / 1e6:.0f} MB")
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, "big"],
                check=True, env=env, cwd=REPO, capture_output=True, text=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"open {r['open_s'] * 1000:7.1f} ms  RSS +{r['rss_open_mb']:6.1f} MB | "
                f"after one argmax pass ({r['argmax_s'] * 1000:.0f} ms) RSS +{r['rss_used_mb']:6.1f} MB"
            )


if __name__ == "__main__":
    main()
