"""Run every experiment of the Experiments lab on the bundled data and write docs/experiments.md:
our numbers beside the published ones, for the README.

    python scripts/run_experiments.py                      # all eight, full size (3 seeds), mnist5k
    python scripts/run_experiments.py --seeds 5            # more seeds: narrower intervals
    python scripts/run_experiments.py --only omitted-class born-again
    python scripts/run_experiments.py --reuse              # rewrite the page from stored results
    python scripts/run_experiments.py --readme README.md   # also fill the README's table
    python scripts/run_experiments.py --threads 1          # on a busy CPU: one thread is faster

Every training is a recorded run in KDVIZ_HOME (see `kdviz runs` or the app's Runs page), and each
experiment's result (CSV + JSON) is in its run folder. With --reuse an experiment whose settings
match a finished earlier run is not trained again. --readme replaces the text between the lines
`<!-- experiments:start -->` and `<!-- experiments:end -->` with the summary table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from kdviz import experiments as ex
from kdviz.data import load_dataset
from kdviz.engine import describe_device, pick_device
from kdviz.errors import KdvizError
from kdviz.experiments.registry import compare
from kdviz.precision import PRECISIONS
from kdviz.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- experiments:start -->", "<!-- experiments:end -->"
COMMAND = "python scripts/run_experiments.py"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stored(name: str, settings: ex.Settings, store: RunStore) -> ex.ExperimentResult | None:
    """The newest finished result of ``name`` run with exactly these settings."""
    wanted = settings.to_dict()
    for run in ex.find_results(name, store):
        result = ex.load_result(run.id)
        if _same(result.settings, wanted):
            return result
    return None


def _same(a: dict, b: dict) -> bool:
    """Equal settings; a field a stored result lacks (it predates the field) takes its default."""
    defaults = {"precision": "auto"}
    norm = lambda d: {  # noqa: E731
        **defaults,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()},
    }
    return norm(a) == norm(b)


def summary_table(results: list[ex.ExperimentResult], link: str = "docs/experiments.md") -> str:
    """One Markdown table: every experiment's measures, ours (with their 95% intervals) beside the
    published numbers, and the verdict read from the interval; each experiment's name links to
    its section of ``link`` ("" = the same page). A tiny result is marked as a smoke test."""
    lines = [
        "| experiment | measure | ours (95% interval) | published | verdict | source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for i, row in enumerate(r.comparison.itertuples(index=False)):
            title = f"[{r.title}]({link}#{_anchor(r.title)})" if i == 0 else ""
            if i == 0 and r.settings.get("size") == "tiny":
                title += f" ({ex.SMOKE_TEST})"
            verdict = getattr(row, "verdict", "-")
            cells = [title, row.measure, row.ours, row.published, verdict, row.source]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")


def page(results: list[ex.ExperimentResult], args: argparse.Namespace, seconds: float) -> str:
    device = describe_device(pick_device(args.device))
    n_test = len(load_dataset(args.dataset, "test"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Experiments lab: our numbers beside the published ones",
        "",
        f"Produced by `{COMMAND}` (dataset `{args.dataset}`, size `{args.size}`) on {when}, "
        f"{device}, torch {torch.__version__}, {platform.python_implementation()} "
        f"{platform.python_version()}; {sum(len(r.run_ids) for r in results)} training runs "
        f"that took {sum(r.seconds for r in results) / 60:.1f} min of training (this command: "
        f"{seconds / 60:.1f} min; stored results are reused with --reuse). The same experiments "
        "run from the app's Experiments lab page or with `kdviz experiment NAME`.",
        "",
        "The published numbers come from other data and models (MNIST with 60,000 images, "
        "speech frames, CIFAR-100, ImageNet); compare the direction and size of each effect, "
        "not the absolute values. Every accuracy here is on the held-out test split "
        f"({n_test} images: one image is {100 / n_test:.1f} pts) and comes with its 95% interval: "
        "Wilson's for an accuracy, Newcombe's paired interval for a gain over the hard-label "
        "baseline on the same images; with several seeds the mean, its sd, and the wider of the "
        "test-sample interval and the seeds' t-interval. Each verdict is read from the interval, "
        "not the point estimate: agrees when the whole interval fits the published claim "
        "(within 1 pt of a published number, or on its side of 0 for 'better than'), disagrees "
        "when none of it does, inconclusive otherwise. Anything chosen (the omitted class's bias) "
        "is chosen on the validation split, and every setting is fixed in advance, not tuned on "
        "these numbers.",
        "",
        *([f"**{ex.SMOKE_TEST}.**", ""] if args.size == "tiny" else []),
        summary_table(results, link=""),
        "",
    ]
    for r in results:
        spec = ex.get_experiment(r.name)
        table = r.table.drop(columns=[c for c in r.table if "run_id" in c])
        settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        out += [
            f"## {r.title}",
            "",
            f"*{spec.question}* ({spec.paper}; `kdviz experiment {r.name}`)",
            "",
            ex.seeds_text(r.settings),
            "",
            ex.markdown_table(r.comparison),
            "",
            ex.markdown_table(table),
            "",
            f"**What to notice.** {r.notice}",
            "",
            (f"Teacher: `{r.teacher}`. " if r.teacher else "")
            + f"Settings: {settings}. {len(r.run_ids)} runs, {r.seconds:.0f} s; result stored "
            f"with run `{r.experiment_run}`.",
            "",
        ]
    return "\n".join(out)


def fill_readme(path: Path, table: str) -> bool:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--size", choices=ex.SIZES, default="full")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per experiment (full: 3)")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME")
    parser.add_argument(
        "--reuse", action="store_true", help="use stored results with the same settings"
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "experiments.md"))
    parser.add_argument("--readme", default=None, help="also fill this README's experiments table")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); 1 is fastest for these small models "
        "on a busy machine",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    names = args.only or ex.list_experiments()
    store = RunStore()
    started = time.perf_counter()
    results = []
    try:
        for name in names:
            seeds = {"seeds": args.seeds} if args.seeds else {}
            settings = ex.make_settings(
                name,
                dataset=args.dataset,
                size=args.size,
                device=args.device,
                precision=args.precision,
                **seeds,
            )
            result = stored(name, settings, store) if args.reuse else None
            if result is not None:
                _log(f"{name}: reusing run {result.experiment_run}")
                # the comparison is text derived from the table: rewritten with today's code
                result.comparison = compare(name, settings.resolved(), result.table)
            else:
                _log(f"{name}: {ex.get_experiment(name).question}")
                result = ex.run_experiment(name, settings, store=store, echo=_log)
                _log(f"{name}: done in {result.seconds:.0f} s")
            results.append(result)
    except KdvizError as err:
        print(f"run_experiments: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(results, args, seconds), encoding="utf-8")
    _log(f"wrote {out} ({seconds / 60:.1f} min)")
    if args.readme:
        if fill_readme(Path(args.readme), summary_table(results)):
            _log(f"filled the experiments table of {args.readme}")
        else:
            _log(f"{args.readme} has no {START} ... {END} block; the table is in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
