"""The ``kdviz`` command: list, train, distill, evaluate, app.

Every sub-command parses its flags into the same config dataclasses the web app uses. An error a
user can cause prints one sentence (no traceback) and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from kdviz.errors import KdvizError
from kdviz.runs import STATUSES

EXIT_USER_ERROR = 2
MAX_RUNS_LIMIT = 1_000_000  # `kdviz runs --limit N`: more than any store holds


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like kdviz's own: ``kdviz: error: ...`` and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USER_ERROR, f"kdviz: error: {self.prog}: {message} (see {self.prog} --help).\n"
        )


def _add_fit_args(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """Flags shared by train and distill, taken from the config dataclass's fields and defaults."""
    parser.add_argument("--dataset", default=defaults.dataset, help="dataset spec (kdviz list)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default=defaults.optimizer)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--schedule", choices=["cosine", "constant"], default=defaults.schedule)
    parser.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs)
    parser.add_argument("--augment", choices=["none", "jitter", "affine"], default=defaults.augment)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--input-dropout", type=float, default=defaults.input_dropout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, mps")
    parser.add_argument("--eval-split", default=defaults.eval_split, help="val or test")
    parser.add_argument("--name", default="", help="checkpoint name")
    parser.add_argument(
        "--out", default="", help="checkpoint stem path (default KDVIZ_HOME/checkpoints/NAME)"
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=defaults.precision,
        help="autocast dtype of the forward; auto = bf16 on CUDA GPUs that have it, else fp32",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=0,
        help="data-parallel processes on this machine (runs the command under torchrun)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _config_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if "omit_classes" in values:
        values["omit_classes"] = tuple(values["omit_classes"] or ())
    return cls(**values)


def build_parser() -> argparse.ArgumentParser:
    from kdviz.engine import DistillConfig, TrainConfig

    parser = _Parser(
        prog="kdviz",
        description="Explore dark knowledge: soft targets, class similarity, live distillation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_list = sub.add_parser("list", help="list models, datasets and checkpoints")
    p_list.add_argument("what", nargs="?", choices=["models", "datasets", "checkpoints", "all"])
    p_list.add_argument("--json", action="store_true")

    t_def = TrainConfig()
    p_train = sub.add_parser("train", help="train a model on hard labels")
    p_train.add_argument("--arch", default=t_def.arch, help="model name (kdviz list models)")
    p_train.add_argument("--label-smoothing", type=float, default=t_def.label_smoothing)
    _add_fit_args(p_train, t_def)

    d_def = DistillConfig()
    p_dist = sub.add_parser("distill", help="distil a teacher into a student")
    p_dist.add_argument("--teacher", required=True, help="teacher checkpoint (name, stem or file)")
    p_dist.add_argument("--student", dest="arch", default=d_def.arch, help="student model name")
    p_dist.add_argument("--method", choices=["kd", "mse", "dkd"], default=d_def.method)
    p_dist.add_argument("--temperature", "-T", type=float, default=d_def.temperature)
    p_dist.add_argument("--alpha", type=float, default=d_def.alpha, help="soft-term weight")
    p_dist.add_argument("--beta", type=float, default=d_def.beta, help="NCKD weight (dkd)")
    p_dist.add_argument("--transfer-fraction", type=float, default=d_def.transfer_fraction)
    p_dist.add_argument(
        "--omit-classes", type=int, nargs="*", default=[], help="class indices left out"
    )
    p_dist.add_argument(
        "--drop-labels", action="store_true", help="use soft targets only, no hard labels"
    )
    _add_fit_args(p_dist, d_def)

    p_eval = sub.add_parser("evaluate", help="accuracy, NLL and ECE of a checkpoint")
    p_eval.add_argument(
        "checkpoint", help="checkpoint (NAME, STEM, STEM.json) or a logits file (.npz, .csv, ...)"
    )
    p_eval.add_argument(
        "--dataset", default=None, help="dataset spec (not needed for logits with labels inside)"
    )
    p_eval.add_argument("--split", default="test")
    p_eval.add_argument("--teacher", default=None, help="also report agreement and KL to it")
    p_eval.add_argument("--json", action="store_true")

    _add_import_parser(sub)

    p_runs = sub.add_parser("runs", help="list recorded runs (app and command line)")
    p_runs.add_argument("--json", action="store_true", help="print a JSON list")
    p_runs.add_argument("--status", choices=list(STATUSES), help="only runs with this status")
    p_runs.add_argument("--limit", type=int, default=0, help="newest N runs only")
    p_runs.add_argument("--delete", metavar="RUN_ID", help="delete a finished run and its files")

    from kdviz.experiments import add_experiment_parser

    add_experiment_parser(sub)

    from kdviz.export import add_export_parser

    add_export_parser(sub)

    _add_app_parser(sub)
    return parser


def _add_app_parser(sub: Any) -> None:
    p_app = sub.add_parser("app", help="start the web app")
    p_app.add_argument("--port", type=int, default=8501)
    p_app.add_argument("--address", default="127.0.0.1")
    p_app.add_argument(
        "--data", action="append", default=[], metavar="DIR",
        help="a folder of datasets the browser may open (repeatable; KDVIZ_HOME always)",
    )  # fmt: skip


def _app_parser() -> argparse.ArgumentParser:
    """The parser of `kdviz app` alone: the others' defaults import torch (~2 s), which the app
    imports in a warm-up thread while Streamlit starts instead of before."""
    parser = _Parser(prog="kdviz")
    _add_app_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from kdviz.data import list_datasets
    from kdviz.models import list_checkpoints, list_models

    what = args.what or "all"
    out: dict[str, Any] = {}
    if what in ("models", "all"):
        out["models"] = list_models()
    if what in ("datasets", "all"):
        out["datasets"] = list_datasets()
    if what in ("checkpoints", "all"):
        out["checkpoints"] = [
            {
                "name": name,
                "path": str(path),
                "arch": card.arch,
                "dataset": card.dataset,
                "kind": card.kind,
            }
            for name, path, card in list_checkpoints()
        ]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for key, items in out.items():
        print(f"{key}:")
        for item in items:
            if isinstance(item, dict):
                print(
                    f"  {item['name']:<32} {item['arch']:<16} {item['dataset']:<12} {item['path']}"
                )
            else:
                print(f"  {item}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from kdviz.engine import DistillConfig, TrainConfig, fit, validate_config

    cls = DistillConfig if args.command == "distill" else TrainConfig
    cfg = _config_from_args(cls, args)

    def on_epoch(metrics: dict[str, Any]) -> None:  # called on rank 0 only under torchrun
        if not args.json:
            extra = ""
            if "agreement" in metrics:
                extra = f"  agreement {metrics['agreement']:.2%}  kl {metrics['kl']:.4f}"
            print(
                f"epoch {metrics['epoch']:>3}  {cfg.eval_split} accuracy {metrics['accuracy']:.2%}"
                f"  nll {metrics['nll']:.4f}{extra}",
                file=sys.stderr,
            )

    from kdviz.distributed import is_main_process

    if not is_main_process():  # torchrun's other ranks train their shards; rank 0 reports
        result = fit(cfg)
        return 0 if result.status in ("done", "cancelled") else 1
    validate_config(cfg)  # before the run is recorded: a refused config leaves no trace
    store, run = _record_run(cfg)
    if run is None:
        result = fit(cfg, on_epoch=on_epoch, show_progress=not args.json)
    else:  # the same path a run started from the app takes in its worker process
        from kdviz.jobs import execute_run

        result = execute_run(store, run.id, cfg, on_epoch=on_epoch, show_progress=not args.json)
    if args.json:
        print(json.dumps({**result.to_dict(), **({"run_id": run.id} if run else {})}))
    else:
        print(result.message)
        if result.checkpoint:
            print(f"checkpoint: {result.checkpoint}")
        if run is not None:
            print(f"run: {run.id}")
    return 0 if result.status in ("done", "cancelled") else 1


def _record_run(cfg: Any) -> tuple[Any, Any]:
    """Record a foreground train / distill run in the run store; (None, None) if the store fails."""
    import sqlite3

    from kdviz.jobs import record_cli_run

    try:
        return record_cli_run(cfg)
    except (sqlite3.Error, OSError, KdvizError) as err:  # busy, read-only or full: train anyway
        print(f"kdviz: warning: the run is not recorded ({err}).", file=sys.stderr)
        return None, None


def _cmd_runs(args: argparse.Namespace) -> int:
    from kdviz.runs import RunStore

    if not 0 <= args.limit <= MAX_RUNS_LIMIT:
        raise KdvizError(
            f"--limit {args.limit} is not valid; give a number of runs from 0 (all) to {MAX_RUNS_LIMIT:,}."
        )
    store = RunStore()
    if args.delete:
        store.delete_run(args.delete)
        print(f"deleted run {args.delete}")
        return 0
    runs = store.list_runs(limit=args.limit or None)
    for run_id in store.skipped:
        print(f"kdviz: warning: run {run_id} is not listed: its stored record is not valid "
              f"(edited or damaged); `kdviz runs --delete {run_id}` removes it.", file=sys.stderr)  # fmt: skip
    if args.status:
        runs = [run for run in runs if run.status == args.status]
    if args.json:
        print(json.dumps([run.to_dict() for run in runs], indent=2))
        return 0
    if not runs:
        print("no runs recorded yet; start one with kdviz distill or in the app")
        return 0
    header = ("id", "status", "kind", "role", "accuracy", "started")
    print("{:<23} {:<11} {:<8} {:<8} {:>8}  {:<19}  name".format(*header))
    for run in runs:
        acc = run.metrics.get("accuracy")
        acc_text = f"{acc:.2%}" if isinstance(acc, (int, float)) else "-"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started or run.created))
        print(
            f"{run.id:<23} {run.status:<11} {run.kind:<8} {run.role:<8} {acc_text:>8}  {when:<19}"
            f"  {run.name}  [{run.device or '?'}]"
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kdviz.engine import evaluate

    metrics = evaluate(args.checkpoint, args.dataset, args.split, teacher=args.teacher)
    if args.json:
        print(json.dumps(metrics))
        return 0
    where = f"{args.dataset} [{args.split}]" if args.dataset else "the labels in the table"
    print(f"{metrics['checkpoint']} on {where}, n = {metrics['n']}")
    ci = metrics.get("accuracy_ci")  # Wilson 95%
    ci_text = f"; 95% CI {ci[0]:.2%} to {ci[1]:.2%}" if ci else ""
    print(f"  accuracy  {metrics['accuracy']:.2%}  ({metrics['errors']} errors{ci_text})")
    known = [c for c in metrics.get("per_class", []) if c["n"]]
    if known:
        worst = min(known, key=lambda c: c["accuracy"])
        low, high = worst["accuracy_ci"]
        print(f"  worst class {worst['name']}: {worst['accuracy']:.2%} of {worst['n']} (95% CI {low:.2%} to {high:.2%})")  # fmt: skip
    print(f"  nll       {metrics['nll']:.4f}")
    print(f"  ece       {metrics['ece']:.4f}")
    if "agreement" in metrics:
        print(f"  agreement {metrics['agreement']:.2%}")
        print(f"  kl        {metrics['kl']:.4f}")
    return 0


def _add_import_parser(sub: Any) -> None:
    p_imp = sub.add_parser(
        "import", help="register your own model (.pt, .safetensors, .onnx) or logits file"
    )
    p_imp.add_argument(
        "file", help="state dict, ONNX model, or logits (.npz .npy .csv .parquet .pt)"
    )
    p_imp.add_argument("--name", required=True, help="the checkpoint name it gets")
    p_imp.add_argument("--arch", default=None, help="torchvision:NAME, timm:NAME or a kdviz model")
    p_imp.add_argument("--input-shape", default=None, help="CxHxW, e.g. 1x28x28")
    p_imp.add_argument("--mean", type=float, nargs="+", default=None, help="per channel, 0..1")
    p_imp.add_argument("--std", type=float, nargs="+", default=None, help="per channel, 0..1")
    p_imp.add_argument("--classes", default=None, help="a file of one name per line, or a,b,c")
    p_imp.add_argument("--dataset", default=None, help="the dataset spec it belongs to")
    p_imp.add_argument(
        "--replace", action="store_true", help="overwrite an imported checkpoint of that name"
    )
    p_imp.add_argument("--json", action="store_true", help="print the card as one JSON object")


def _cmd_import(args: argparse.Namespace) -> int:
    from kdviz.importers import import_source
    from kdviz.models import load_card

    stem = import_source(
        args.file,
        args.name,
        arch=args.arch,
        in_shape=args.input_shape,
        mean=args.mean,
        std=args.std,
        classes=args.classes,
        dataset=args.dataset,
        replace=args.replace,
    )
    card = load_card(stem)
    if args.json:
        print(json.dumps({"stem": str(stem), **card.to_dict()}))
        return 0
    if card.kind == "logits":  # a table: its rows and labels say more than an input shape
        rows, labelled = card.extra.get("rows", "?"), card.extra.get("has_labels")
        what = f"{rows} rows, {'with' if labelled else 'without'} labels"
    else:
        shape = "x".join(map(str, card.in_shape))
        what = f"input {shape}, mean {card.mean}, std {card.std}"
    print(
        f"kdviz: imported {card.kind} {card.name!r}: {card.num_classes} classes, {what}",
        file=sys.stderr,
    )
    print(stem)
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from kdviz.paths import REPO_ROOT

    app = REPO_ROOT / "app.py"
    if not app.exists():
        raise KdvizError(f"The app entry {app} is missing; run kdviz from a checkout of the repo.")
    print(f"kdviz: open http://{args.address}:{args.port}", file=sys.stderr)
    from kdviz.ui.launch import serve  # the only Streamlit import, behind the app command

    return serve(app, args.port, args.address, data=args.data)


def _cmd_experiment(args: argparse.Namespace) -> int:
    from kdviz.experiments import run_experiment_cli

    return run_experiment_cli(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from kdviz.export import run_export_cli

    return run_export_cli(args)


COMMANDS = {
    "experiment": _cmd_experiment,
    "export": _cmd_export,
    "list": _cmd_list,
    "train": _cmd_fit,
    "distill": _cmd_fit,
    "evaluate": _cmd_evaluate,
    "import": _cmd_import,
    "app": _cmd_app,
    "runs": _cmd_runs,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:  # hidden: the process behind a run started from the app
        return _worker(argv[1:])
    parser = _app_parser() if argv[:1] == ["app"] else build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "nproc", 0):  # kdviz distill --nproc N: the same command under torchrun
            from kdviz.distributed import relaunch

            return relaunch(args.nproc, argv)
        return COMMANDS[args.command](args)
    except KdvizError as err:
        print(f"kdviz: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("kdviz: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "kdviz: error: this machine ran out of memory; use a smaller model, batch size or dataset.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except OSError as err:
        sentence = _path_error(err)
        if not sentence:
            raise  # not about a path the user gave: a bug to see in full
        print(f"kdviz: error: {sentence}", file=sys.stderr)
        return EXIT_USER_ERROR


# errno values that mean "this path cannot be used", whatever the command: the user's to fix.
_PATH_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "too many symbolic links",
    errno.EEXIST: "a file of that name is in the way",
}


def _path_error(err: OSError) -> str:
    """One sentence for an OSError about a named path (permissions, read-only, full disk...), or ""."""
    reason = _PATH_ERRNOS.get(err.errno or -1)
    if reason is None or not err.filename:
        return ""
    return f"kdviz cannot use {err.filename} ({reason}); check the path you gave, or its permissions and free space."


def _worker(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: kdviz worker RUN_ID", file=sys.stderr)
        return EXIT_USER_ERROR
    from kdviz.jobs import run_worker

    try:
        code = run_worker(argv[0])
    except KdvizError as err:
        print(f"kdviz: error: {err}", file=sys.stderr)
        code = EXIT_USER_ERROR
    if os.environ.get("KDVIZ_WORKER") != argv[0]:
        return code
    # A launched worker: everything is committed to the run store, so skip torch's slow
    # interpreter teardown (~2 s of CPU that the next run in the queue would share).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
