"""What compression buys for the shipped models: ONNX fp32 and int8 exports of the mnist5k
teacher (an ensemble of three CNNs) and the distilled 2 x 800 and 2 x 30 students, with
parameters, file size, CPU latency, accuracy (95% Wilson interval) and agreement.

    python benchmarks/compress.py            # a table
    python benchmarks/compress.py --json     # one JSON object

Exports go to a fresh temporary folder. Latencies are medians of repeated onnxruntime runs on
one thread, and are reported as ratios within this run (student vs teacher, int8 vs fp32):
absolute milliseconds depend on the machine and on what else it runs. Accuracy is on the
bundled mnist5k test split (500 images); agreement of int8 with fp32 predictions is the much
tighter measure of what quantization changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

TEACHER = "mnist5k-teacher"
STUDENTS = ("mnist5k-mlp800-distilled", "mnist5k-mlp30-distilled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--split", default="test")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per latency figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["KDVIZ_HOME"] = tempfile.mkdtemp(prefix="kdviz-bench-")

    from kdviz import export
    from kdviz.data import load_dataset

    dataset = load_dataset(args.dataset, args.split)
    rows, fp32_predictions = [], {}
    for ref in (TEACHER, *STUDENTS):
        for precision in export.PRECISIONS:
            result = export.export_onnx(ref, precision=precision)
            row = export.measure_export(result, dataset, budget_s=args.budget)
            row["model"] = ref
            if precision == "fp32":
                fp32_predictions[ref] = row["predictions"]
            # int8 vs the same model in fp32: how many predictions quantization changed
            row["agreement_with_fp32"] = float((row["predictions"] == fp32_predictions[ref]).mean())
            rows.append(row)
    frame = export.compress_frame(rows, dataset.labels, fp32_predictions[TEACHER])
    by = {(r["model"], r["precision"]): r for r in frame.to_dict("records")}
    teacher = by[(TEACHER, "fp32")]
    for record in by.values():
        fp32 = by[(record["model"], "fp32")]
        for batch in export.LATENCY_BATCHES:
            key = f"latency_b{batch}_ms"
            record[f"latency_b{batch}_vs_teacher"] = record[key] / teacher[key]
            record[f"latency_b{batch}_vs_fp32"] = record[key] / fp32[key]
        record["size_vs_fp32"] = record["size_bytes"] / fp32["size_bytes"]
        record["accuracy_change_vs_fp32_points"] = 100 * (record["accuracy"] - fp32["accuracy"])
    out = {
        "machine": export.machine_description(),
        "threads": export.LATENCY_THREADS,
        "dataset": args.dataset,
        "split": args.split,
        "n": len(dataset),
        "rows": list(by.values()),
        "summary": export.summary_sentence(teacher, by[(STUDENTS[0], "fp32")]),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _print_table(out)
    return 0


def _print_table(out: dict) -> None:
    print(f"{out['dataset']} [{out['split']}], n = {out['n']}; {out['machine']}, "
          f"{out['threads']} thread")  # fmt: skip
    head = ("model", "prec", "params", "MB", "size/fp32", "b1 ms", "b256 ms", "b1/teacher",
            "b1/fp32", "accuracy [95% CI]", "agree T", "agree fp32")  # fmt: skip
    print(
        "{:<26} {:<5} {:>9} {:>6} {:>9} {:>7} {:>8} {:>10} {:>7}  {:<22} {:>7} {:>10}".format(*head)
    )
    for r in out["rows"]:
        ci = f"{100 * r['accuracy']:.1f}% [{100 * r['accuracy_low']:.1f}, {100 * r['accuracy_high']:.1f}]"
        print(
            f"{r['model']:<26} {r['precision']:<5} {r['parameters']:>9,} {r['size_mb']:>6.2f} "
            f"{r['size_vs_fp32']:>9.1%} {r['latency_b1_ms']:>7.3f} {r['latency_b256_ms']:>8.2f} "
            f"{r['latency_b1_vs_teacher']:>10.3f} {r['latency_b1_vs_fp32']:>7.2f}  {ci:<22} "
            f"{r['agreement']:>7.1%} {r['agreement_with_fp32']:>10.1%}"
        )  # fmt: skip
    print(out["summary"])


if __name__ == "__main__":
    sys.exit(main())
