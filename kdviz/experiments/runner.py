"""The runner: trains every model of an experiment as a recorded run of the run store, runs an
experiment in the foreground (``run_experiment``) or as a background process
(``start_experiment``), and the ``kdviz experiment`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from kdviz import engine, jobs, stats
from kdviz.data import load_dataset
from kdviz.engine import TrainConfig
from kdviz.errors import KdvizError
from kdviz.experiments import intervals
from kdviz.experiments.registry import (
    RESULT_JSON,
    TABLE_CSV,
    Experiment,
    ExperimentResult,
    compare,
    format_result,
    get_experiment,
    list_experiments,
    make_settings,
    numeric_columns,
    write_text,
)
from kdviz.experiments.settings import (
    SEED_STEP,
    SIZES,
    SMOKE_TEST,
    Settings,
    TeacherSettings,
    common_fields,
)
from kdviz.models import (
    ModelCard,
    load_card,
    load_checkpoint,
    resolve_checkpoint,
    save_ensemble_card,
)
from kdviz.paths import REPO_ROOT, kdviz_home
from kdviz.precision import PRECISIONS
from kdviz.runs import Run, RunStore, new_run_id, run_folder

WORKER_LOG = "worker.log"

# ---------------------------------------------------------------------------- the runner


class Cancelled(Exception):  # noqa: N818  (a signal, not an error)
    """The experiment was cancelled (from the app, the Runs page, SIGTERM or Ctrl-C)."""


@dataclass
class Trained:
    """A finished training run of an experiment."""

    run_id: str
    label: str
    checkpoint: str  # stem path
    metrics: dict[str, Any]  # the last epoch's evaluation (eval_split)
    history: list[dict[str, Any]]
    seconds: float
    snapshots: dict[int, str] = field(default_factory=dict)  # epoch -> stem of a copy
    dataset: str = ""  # where metrics were measured: the run's dataset and eval split
    split: str = ""


class Runner:
    """Trains the models of one experiment as recorded runs (role, group and parent = the
    experiment's run), keeps their ids, and reports progress on the experiment's run row."""

    def __init__(
        self,
        store: RunStore,
        experiment_id: str,
        *,
        source: str = "cli",
        show_progress: bool = False,
        echo: Callable[[str], None] | None = None,
        stop: jobs.StopFlag | None = None,
    ) -> None:
        self.store, self.experiment_id = store, experiment_id
        self.source, self.show_progress = source, show_progress
        self.echo = echo or (lambda _line: None)
        self.stop = stop or jobs.StopFlag(store, experiment_id)
        self.trained: list[Trained] = []
        self.reused: list[str] = []  # finished runs of earlier experiments used again (a teacher)
        self.planned = 0
        self.teacher_used = ""  # what teacher() returned
        self._correct: dict[str, Tensor] = {}  # run id -> (N,) bool on its eval split

    @property
    def folder(self) -> Path:
        folder = run_folder(self.experiment_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def run_ids(self) -> list[str]:
        """Every run the experiment used: reused ones first, then those it trained."""
        return [*self.reused, *(t.run_id for t in self.trained)]

    def plan(self, more: int) -> None:
        """Announce ``more`` trainings still to come (the progress bar's total)."""
        self.planned = len(self.trained) + int(more)
        self.store.update(self.experiment_id, total_steps=self.planned, step=len(self.trained))

    def check_stop(self) -> None:
        """Raise Cancelled if the experiment was asked to stop (read fresh, not throttled)."""
        if self.stop(force=True):
            raise Cancelled

    def train(
        self,
        cfg: TrainConfig,
        label: str,
        *,
        role: str = "student",
        teacher_transform: Callable[[Tensor, Tensor], Tensor] | None = None,
        sample_weight: Callable[[Tensor, Tensor], Tensor] | None = None,
        snapshot_epochs: tuple[int, ...] = (),
    ) -> Trained:
        """Train or distil ``cfg`` as a recorded run; its checkpoint is RUN_FOLDER/student."""
        self.check_stop()
        run_id = _new_run_id(self.store)
        stem = jobs.checkpoint_stem(run_id)
        name = f"{_slug(label)}-{run_id[-6:]}"
        cfg = dataclasses.replace(cfg, name=name, out=str(stem))
        self.store.create_run(
            cfg.to_dict(),
            run_id=run_id,
            status="running",
            name=name,
            role=role,
            source=self.source,
            group_id=self.experiment_id,
            parent_id=self.experiment_id,
            pid=os.getpid(),
            checkpoint=str(stem),
        )
        number = len(self.trained) + 1
        total = max(self.planned, number)
        self.store.update(
            self.experiment_id, message=f"training {number} of {total}: {label}", step=number - 1
        )
        self.echo(f"[{number}/{total}] {label} ...")
        snapshots: dict[int, str] = {}

        def on_epoch(metrics: dict[str, Any]) -> None:
            epoch = int(metrics.get("epoch", 0))
            if epoch in snapshot_epochs:
                snapshots[epoch] = str(_snapshot(stem, epoch))

        self.stop.ids = [self.experiment_id, run_id]
        try:
            hooks = {"teacher_transform": teacher_transform, "sample_weight": sample_weight}
            result = jobs.execute_run(
                self.store,
                run_id,
                cfg,
                on_epoch=on_epoch,
                show_progress=self.show_progress,
                stop=self.stop,
                fit_kwargs={k: v for k, v in hooks.items() if v is not None},
            )
        finally:
            self.stop.ids = [self.experiment_id]
        if result.status == "cancelled":
            raise Cancelled
        if result.status != "done":
            raise KdvizError(f"The run {run_id} ({label}) {result.status}: {result.message}")
        trained = Trained(
            run_id, label, str(stem), result.metrics, result.history, result.seconds, snapshots,
            cfg.dataset, cfg.eval_split,
        )  # fmt: skip
        self.trained.append(trained)
        self.store.update(self.experiment_id, step=len(self.trained))
        acc = result.metrics.get("accuracy", float("nan"))
        self.echo(
            f"[{number}/{total}] {label}: {cfg.eval_split} accuracy {acc:.2%} "
            f"({result.seconds:.1f} s, run {run_id})"
        )
        return trained

    def logits(self, checkpoint: str, dataset: str, split: str) -> Tensor:
        """(N, K) logits of a checkpoint on a split (the disk cache is used for stable stems)."""
        model, card = load_checkpoint(checkpoint)
        return engine.model_logits(model, card, load_dataset(dataset, split))

    def correct(self, run_id: str) -> Tensor:
        """(N,) bool: which images of its eval split the model of run ``run_id`` gets right."""
        if run_id not in self._correct:
            run = next((t for t in self.trained if t.run_id == run_id), None)
            if run is None:
                raise KdvizError(f"The run {run_id} was not trained by this experiment.")
            data = load_dataset(run.dataset, run.split)
            logits = self.logits(run.checkpoint, run.dataset, run.split)
            self._correct[run_id] = stats.correct_vector(logits, data.labels)
        return self._correct[run_id]

    def teacher(self, s: TeacherSettings) -> str:
        """The teacher to distil: ``s.teacher``, else the shipped DATASET-teacher, else one trained
        here (s.teacher_arch for s.teacher_epochs epochs) as a recorded run."""
        self.teacher_used = self._find_teacher(s)
        return self.teacher_used

    def _find_teacher(self, s: TeacherSettings) -> str:
        if s.teacher:
            resolve_checkpoint(s.teacher)
            return s.teacher
        shipped = shipped_teacher(s.dataset)
        if shipped:
            return shipped
        cfg = TrainConfig(**common_fields(s), arch=s.teacher_arch)
        cfg = dataclasses.replace(cfg, epochs=s.teacher_epochs or s.epochs, eval_split="val")
        earlier = self._earlier_teacher(cfg)
        if earlier is not None:
            self.echo(f"teacher: reusing {earlier.checkpoint} (run {earlier.id})")
            self.reused.append(earlier.id)
            return earlier.checkpoint
        self.plan(1)
        return self.train(cfg, f"teacher {s.teacher_arch}", role="teacher").checkpoint

    def _earlier_teacher(self, cfg: TrainConfig) -> Run | None:
        """A finished teacher run of an earlier experiment with this very config (same data,
        architecture, epochs, seed...), so the teacher experiments share one fallback teacher."""
        wanted = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "out", "device")}
        for run in self.store.list_runs(status=("done",), kind="train"):
            have = {k: v for k, v in run.config.items() if k not in ("name", "out", "device")}
            stem = Path(run.checkpoint) if run.checkpoint else None
            if (
                run.role == "teacher"
                and have == wanted
                and stem is not None
                and stem.with_name(stem.name + ".safetensors").is_file()
            ):
                return run
        return None


def shipped_teacher(dataset: str) -> str | None:
    """The shipped (or user-saved) teacher DATASET-teacher when it exists and fits ``dataset``."""
    name = f"{dataset.split(':')[0]}-teacher"
    try:
        card = load_card(name)
    except KdvizError:
        return None
    return name if card.dataset == dataset else None


def _new_run_id(store: RunStore) -> str:
    while True:
        run_id = new_run_id()
        if store.find(run_id) is None:
            return run_id


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:40] or "run"


def _snapshot(stem: Path, epoch: int) -> Path:
    """Copy the checkpoint just saved at ``epoch`` to STEM-eEPOCH (card renamed)."""
    copy = stem.with_name(f"{stem.name}-e{epoch}")
    shutil.copyfile(
        stem.with_name(stem.name + ".safetensors"), copy.with_name(copy.name + ".safetensors")
    )
    card = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
    card["name"] = f"{card.get('name', stem.name)}-e{epoch}"
    write_text(copy.with_name(copy.name + ".json"), json.dumps(card, indent=2) + "\n")
    return copy


def ensemble_card(runner: Runner, members: list[str], dataset: str, name: str) -> Path:
    """An ensemble card over ``members`` in the experiment's folder; returns its stem."""
    ds = load_dataset(dataset, "train")
    card = ModelCard(
        name=name,
        num_classes=ds.num_classes,
        class_names=list(ds.class_names),
        in_shape=list(ds.in_shape),
        mean=list(ds.mean),
        std=list(ds.std),
        dataset=dataset,
        members=[str(m) for m in members],
        kind="ensemble",
        arch="ensemble",
    )
    return save_ensemble_card(card, runner.folder / name)


# ---------------------------------------------------------------------------- running


def _experiment_config(name: str, s: Settings) -> dict[str, Any]:
    """The run row's config: the experiment, its settings, and the fields the Runs page shows."""
    return {
        "kind": "experiment",
        "experiment": name,
        "settings": s.to_dict(),
        "dataset": s.dataset,
        "epochs": s.epochs,
        "device": s.device,
        "precision": s.precision,
        "eval_split": s.eval_split,
    }


def run_experiment(
    name: str,
    settings: Settings | None = None,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    source: str = "cli",
    show_progress: bool = False,
    echo: Callable[[str], None] | None = None,
    stop: jobs.StopFlag | None = None,
) -> ExperimentResult:
    """Run an experiment end to end in this process, recorded as one "experiment" run (``run_id``,
    or a new one) whose folder gets the result (CSV + JSON). Raises Cancelled when cancelled."""
    spec = get_experiment(name)
    s = (settings or spec.settings()).resolved()
    if not isinstance(s, spec.settings):
        raise KdvizError(f"Experiment {name!r} takes {spec.settings.__name__}.")
    store = store or RunStore()
    if run_id is None:
        run_id = store.create_run(
            _experiment_config(spec.name, s),
            status="running",
            name=f"experiment {spec.name}",
            role="experiment",
            source=source,
            pid=os.getpid(),
        ).id
    runner = Runner(store, run_id, source=source, show_progress=show_progress, echo=echo, stop=stop)
    started = time.perf_counter()
    try:
        result = _run_seeds(spec, s, runner)
    except (Cancelled, KeyboardInterrupt):
        store.finish(run_id, "cancelled", f"Cancelled after {len(runner.trained)} runs.")
        raise
    except KdvizError as err:
        store.finish(run_id, "failed", str(err))
        raise
    except BaseException as err:
        store.finish(run_id, "failed", f"{type(err).__name__}: {err}".strip())
        raise
    result.run_ids = runner.run_ids
    result.teacher = runner.teacher_used
    result.experiment_run = run_id
    result.seconds = time.perf_counter() - started
    path = result.save(runner.folder)
    store.add_artifact(run_id, "result", path)
    store.add_artifact(run_id, "table", runner.folder / TABLE_CSV)
    store.finish(
        run_id,
        "done",
        f"Finished {len(runner.trained)} runs in {result.seconds:.0f} s.",
        metrics={"runs": len(runner.trained), "seconds": result.seconds},
        step=len(runner.trained),
        total_steps=len(runner.trained),
    )
    return result


def _run_seeds(spec: Experiment, s: Settings, runner: Runner) -> ExperimentResult:
    """Run the experiment once per seed, add the intervals to each table, average the seeds and
    compare with the papers (the experiment's registered ``compare`` on the final table)."""
    n_eval = len(load_dataset(s.dataset, s.eval_split))
    results = []
    for i in range(s.seeds):
        seeded = dataclasses.replace(s, seed=s.seed + SEED_STEP * i)
        if s.seeds > 1:
            runner.echo(f"seed {i + 1} of {s.seeds} (seed {seeded.seed})")
        result = spec.fn(seeded, runner)
        table = intervals.add_wilson(result.table, "accuracy", n_eval)
        result.table = intervals.add_paired_gain(table, runner.correct)
        results.append(result)
    result = results[0]
    result.settings = s.to_dict()
    result.table = numeric_columns(intervals.aggregate_seeds([r.table for r in results]))
    result.comparison = compare(spec.name, s, result.table)
    return result


def find_results(name: str | None = None, store: RunStore | None = None) -> list[Run]:
    """Finished experiment runs (newest first), optionally of one experiment."""
    store = store or RunStore()
    runs = store.list_runs(kind="experiment")
    return [
        r
        for r in runs
        if (name is None or r.config.get("experiment") == name)
        and r.status == "done"
        and (r.folder / RESULT_JSON).is_file()
    ]


# ---------------------------------------------------------------------------- background runs

_children: dict[str, subprocess.Popen] = {}  # experiment workers this process started


def start_experiment(
    name: str, settings: Settings | None = None, *, store: RunStore | None = None
) -> Run:
    """Queue an experiment as one background run and start its process; returns at once.

    The process waits for a free slot of the run queue (like any run), then trains every model
    of the experiment as its own recorded run and writes the result into the run folder.
    """
    spec = get_experiment(name)
    s = (settings or spec.settings()).resolved()
    store = store or RunStore()
    device = engine.pick_device(s.device)
    run = store.create_run(
        _experiment_config(spec.name, s),
        run_id=_new_run_id(store),
        name=f"experiment {spec.name}",
        role="experiment",
        source="app",
        device=jobs.device_name(device),
        max_running=store.max_running(jobs.default_max_running(device.type)),
    )
    folder = run.folder
    folder.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env["KDVIZ_HOME"] = str(kdviz_home())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = folder / WORKER_LOG
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kdviz.experiments", "worker", run.id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,  # it outlives a Ctrl-C of the web server
            )
    except OSError as err:
        store.finish(run.id, "failed", f"The worker process could not start ({err}).")
        raise KdvizError(f"The experiment's process could not start ({err}).") from err
    _children[run.id] = proc
    store.set_process(run.id, proc.pid)
    store.add_artifact(run.id, "log", log_path)
    return store.get(run.id)


def reap() -> None:
    """Collect finished worker processes of this process (the page calls it on every poll)."""
    for run_id, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[run_id]


def cancel_experiment(run_id: str, store: RunStore | None = None) -> Run:
    """Ask an experiment (and with it its current training run) to stop."""
    store = store or RunStore(recover=False)
    for run in store.group(run_id):
        if run.active:
            jobs.cancel(run.id, store)
    return store.get(run_id)


def run_experiment_worker(run_id: str) -> int:
    """The background process of ``start_experiment``: wait for a slot, then run the experiment."""
    store = RunStore(recover=False)
    run = store.find(run_id)
    if run is None or run.status != "queued" or run.kind != "experiment":
        print(f"kdviz experiment worker: run {run_id} is not a queued experiment.", file=sys.stderr)
        return 0
    stop = jobs.become_worker(store, run_id)
    if not jobs.wait_for_slot(store, run_id, stop):
        return 0
    config = store.get(run_id).config
    print(f"kdviz experiment worker: {config['experiment']} started", file=sys.stderr, flush=True)
    try:
        settings = make_settings(config["experiment"], **config.get("settings", {}))
        run_experiment(
            config["experiment"],
            settings,
            store=store,
            run_id=run_id,
            source="app",
            echo=lambda line: print(line, file=sys.stderr, flush=True),
            stop=stop,
        )
    except Cancelled:
        return 0
    except KdvizError as err:
        print(f"kdviz experiment worker: {err}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return 0


# ---------------------------------------------------------------------------- CLI


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``kdviz experiment NAME [--dataset SPEC] [--size tiny|full] [--set KEY=VALUE ...] [--json]``."""
    names = ", ".join(list_experiments())
    parser = subparsers.add_parser(
        "experiment",
        help="run a classic dark-knowledge experiment end to end",
        description=f"Run one experiment end to end and print our numbers beside the published ones. Experiments: {names}.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"one of: {names} (omit to list)")
    parser.add_argument("--dataset", default=None, help="dataset spec (default mnist5k)")
    parser.add_argument("--size", choices=SIZES, default=None, help="tiny (seconds) or full")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="auto (bf16 autocast on a CUDA GPU that has it, else fp32), fp32, bf16, fp16",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="repeat with this many seeds (tiny 1, full 3)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting, e.g. --set temperatures=1,4,20 --set student=mlp-100-100",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def run_experiment_cli(args: argparse.Namespace) -> int:
    """The ``kdviz experiment`` command: runs in the foreground, progress on stderr."""
    if not args.name:
        for name in list_experiments():
            spec = get_experiment(name)
            print(f"{name:<24} {spec.title}: {spec.question}")
        return 0
    spec = get_experiment(args.name)
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        if "=" not in item:
            raise KdvizError(f"--set takes KEY=VALUE (got {item!r}), e.g. --set epochs=5.")
        key, value = item.split("=", 1)
        overrides[key.strip().replace("-", "_")] = value
    for key in ("dataset", "size", "device", "precision", "seeds"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    settings = spec.make_settings(**overrides)
    quiet = bool(args.json)

    def echo(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    echo(f"{spec.title}: {spec.question}")
    if settings.size == "tiny":
        echo(f"Note: {SMOKE_TEST}.")
    try:
        result = run_experiment(
            spec.name, settings, source="cli", show_progress=not quiet, echo=echo
        )
    except Cancelled:
        print("kdviz: experiment cancelled", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return 0
    print(format_result(result))
    return 0


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "worker":
        return run_experiment_worker(argv[1])
    parser = argparse.ArgumentParser(prog="python -m kdviz.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    add_experiment_parser(sub)
    args = parser.parse_args(argv)
    try:
        return run_experiment_cli(args)
    except KdvizError as err:
        print(f"kdviz: error: {err}", file=sys.stderr)
        return 2
