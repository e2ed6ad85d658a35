"""Background runs: start one OS process per run, queue them, watch, cancel and recover them.

A run started from the app is a row in the run store plus a ``kdviz worker RUN_ID`` process. The
worker waits in the store until its place in the queue comes (``RunStore.claim_slot``: one atomic
SQLite transaction, first come first served, at most ``max_running`` at once), then calls
``execute_run`` -- the very function ``kdviz train`` / ``kdviz distill`` run in the foreground. No
daemon is needed: a killed worker leaves a row whose pid is gone, which ``RunStore.recover`` marks
interrupted the next time anyone opens or polls the store, so the queue never jams.

Cancel: ``cancel`` sets a flag in the store that the worker's ``should_stop`` hook polls (at most
every 0.2 s); ``refresh`` falls back to SIGTERM (handled as a cancel) and then SIGKILL if the
worker does not stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdviz.errors import KdvizError
from kdviz.paths import REPO_ROOT, kdviz_home, make_folder
from kdviz.runs import Run, RunStore, process_alive, run_folder

if TYPE_CHECKING:  # torch is imported by the worker only once its slot comes
    from kdviz.engine import RunResult, TrainConfig

FLUSH_EVERY_S = 0.5  # metrics are written in batches at most this often
POINT_EVERY_S = 0.25  # training-loss curves get at most one (averaged) point this often
APP_LOG_EVERY = 1  # app runs report every step: the writer averages, the curves stay live
STOP_POLL_S = 0.2  # the worker reads the cancel flag at most this often
STAGE_EVERY_S = 0.3  # a stage's n/N progress is written to the store at most this often
QUEUE_POLL_S = 0.25  # a queued worker asks for a slot this often
TERM_AFTER_S = 5.0  # a cancelled run still alive after this gets SIGTERM ...
KILL_AFTER_S = 20.0  # ... and SIGKILL after this
DEFAULT_EPOCHS = 8  # the page's default run and its baseline finish in well under 60 s on 2 cores
STUDENT_STEM = "student"  # the checkpoint of run RUN_ID is runs_dir()/RUN_ID/student

_children: dict[str, subprocess.Popen] = {}  # workers this process started (reaped by refresh)


# ---------------------------------------------------------------------------- configs


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """The TrainConfig or DistillConfig a run stored (``to_dict()`` output)."""
    from kdviz.engine import DistillConfig, TrainConfig

    cls = DistillConfig if data.get("kind") == "distill" else TrainConfig
    return cls.from_dict(data)


def default_max_running(device_type: str) -> int:
    """Runs at once when nobody configured it: 1 on a CPU or MPS (they share the cores), 2 on CUDA."""
    return 2 if device_type == "cuda" else 1


def default_config(teacher: str = "mnist5k-teacher", **changes: Any) -> Any:
    """The run the Distill page proposes: Hinton's 2x800 MLP student, KD at T = 4, alpha 0.9,
    a few epochs evaluated on the test split (so the curve shows test accuracy)."""
    from kdviz.engine import DistillConfig

    cfg = DistillConfig(
        teacher=teacher,
        arch="mlp-800-800",
        method="kd",
        temperature=4.0,
        alpha=0.9,
        epochs=DEFAULT_EPOCHS,
        eval_split="test",
    )
    return dataclasses.replace(cfg, **changes)


def device_name(device: Any) -> str:
    """What a run will train on, as named before its worker starts ("CPU (2 cores)", "CUDA (...)")."""
    from kdviz.engine import describe_device

    if device.type == "cpu":  # this process's torch thread count is not the worker's
        return f"CPU ({os.cpu_count()} cores)"
    return describe_device(device)


def checkpoint_stem(run_id: str) -> Path:
    return run_folder(run_id) / STUDENT_STEM


def baseline_config(cfg: Any) -> Any:
    """The hard-label twin of a distillation config: same student, data, transfer set and seed.

    It stays a DistillConfig with ``alpha = 0`` so the loss is exactly the cross-entropy on hard
    labels, the batch order and transfer set match the student's, and the per-epoch evaluation
    still reports agreement and KL to the same teacher (its soft term is computed but weighted 0).
    """
    return dataclasses.replace(cfg, method="kd", alpha=0.0, drop_labels=False)


def method_label(config: dict[str, Any]) -> str:
    """How a run learns, in words: "KD T=4 α=0.9", "DKD T=4 α=1 β=8", "hard labels"."""
    method = config.get("method", "")
    alpha = float(config.get("alpha", 0) or 0)
    if config.get("kind") != "distill" or (method in ("kd", "mse") and alpha == 0):
        return "hard labels"
    t = f"T={float(config.get('temperature', 1)):g}"
    if method == "dkd":
        return f"DKD {t} α={alpha:g} β={float(config.get('beta', 0)):g}"
    if method == "mse":
        return f"logit MSE α={alpha:g}"
    return f"{str(method).upper()} {t} α={alpha:g}"


def run_title(config: dict[str, Any]) -> str:
    """A run's readable default name: "KD T=4 α=0.9 · mlp-800-800" / "hard labels · mlp-800-800"."""
    return f"{method_label(config)} · {config.get('arch', '?')}"


def _run_name(cfg: Any, run_id: str, baseline: bool = False) -> str:
    """The name an app run gets (its files live under its id, so the name need not be unique)."""
    return run_title(cfg.to_dict())


# ---------------------------------------------------------------------------- starting


def start_distill(
    cfg: Any,
    *,
    baseline: bool = True,
    store: RunStore | None = None,
    max_running: int | None = None,
) -> list[Run]:
    """Queue a distillation run (and its hard-label baseline) and start their workers; returns at once.

    The runs are returned student first. Their checkpoints go to ``runs_dir()/RUN_ID/student``.
    Problems the user can fix (unknown teacher, device or architecture) raise KdvizError here,
    before anything is queued.
    """
    from kdviz.engine import DistillConfig, pick_device
    from kdviz.models import load_card

    if not isinstance(cfg, DistillConfig):
        raise KdvizError("start_distill takes a DistillConfig; use start_train for hard labels.")
    store = store or RunStore()
    device = pick_device(cfg.device)
    load_card(cfg.teacher)  # fail now, not in the worker, on a teacher that is not there
    slots = max_running or store.max_running(default_max_running(device.type))
    configs = [("student", cfg)]
    if baseline:
        configs.append(("baseline", baseline_config(cfg)))
    runs: list[Run] = []
    group_id = ""
    for role, run_cfg in configs:
        run_id = _unique_id(store)
        run_cfg = dataclasses.replace(
            run_cfg,
            name=_run_name(run_cfg, run_id, baseline=role == "baseline"),
            out=str(checkpoint_stem(run_id)),
            log_every=min(run_cfg.log_every, APP_LOG_EVERY),
        )
        run = store.create_run(
            run_cfg.to_dict(),
            run_id=run_id,
            name=run_cfg.name,
            role=role,
            source="app",
            group_id=group_id or run_id,
            parent_id=group_id,
            device=device_name(device),
            max_running=slots,
            checkpoint=run_cfg.out,
        )
        group_id = group_id or run_id
        runs.append(run)
    for run in runs:
        launch_worker(run.id, store)
    return [store.get(run.id) for run in runs]


def start_train(cfg: Any, *, store: RunStore | None = None) -> Run:
    """Queue a hard-label training run (TrainConfig) and start its worker; returns at once."""
    from kdviz.engine import pick_device

    store = store or RunStore()
    device = pick_device(cfg.device)
    run_id = _unique_id(store)
    cfg = dataclasses.replace(
        cfg,
        name=cfg.name or _run_name(cfg, run_id),
        out=str(checkpoint_stem(run_id)),
        log_every=min(cfg.log_every, APP_LOG_EVERY),
    )
    run = store.create_run(
        cfg.to_dict(),
        run_id=run_id,
        name=cfg.name,
        device=device_name(device),
        max_running=store.max_running(default_max_running(device.type)),
        checkpoint=cfg.out,
    )
    launch_worker(run.id, store)
    return store.get(run.id)


def _unique_id(store: RunStore) -> str:
    from kdviz.runs import new_run_id

    while True:
        run_id = new_run_id()
        if store.find(run_id) is None:
            return run_id


def worker_command(run_id: str) -> list[str]:
    return [sys.executable, "-m", "kdviz", "worker", run_id]


def launch_worker(run_id: str, store: RunStore | None = None) -> subprocess.Popen:
    """Start the OS process that carries a queued run; its output goes to RUN_FOLDER/worker.log."""
    store = store or RunStore()
    folder = run_folder(run_id)
    make_folder(folder, "The run's folder")
    log_path = folder / "worker.log"
    env = os.environ.copy()
    env["KDVIZ_HOME"] = str(kdviz_home())  # the worker must see the same store
    env["KDVIZ_WORKER"] = run_id  # lets `kdviz worker` exit without the slow teardown
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with other
    # work (the web server, other people) spinning made a 2-thread step 10x slower.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                worker_command(run_id),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,  # the run outlives a Ctrl-C of the web server
            )
    except OSError as err:
        store.finish(run_id, "failed", f"The worker process could not start ({err}).")
        raise KdvizError(
            f"The run's process could not start ({err}); check the Python at {sys.executable}."
        ) from err
    _children[run_id] = proc
    store.set_process(run_id, proc.pid)
    store.add_artifact(run_id, "log", log_path)
    return proc


# ---------------------------------------------------------------------------- watching


def refresh(store: RunStore | None = None) -> RunStore:
    """What the app calls on every poll: reap finished workers, escalate stuck cancels, recover."""
    store = store or RunStore(recover=False)
    for run_id, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[run_id]
    _escalate_cancels(store)
    store.recover()
    return store


def _escalate_cancels(store: RunStore) -> None:
    now = time.time()
    for run in store.list_runs(status=("queued", "running")):
        if run.cancel_requested is None or not process_alive(run.pid, run.pid_start):
            continue
        waited = now - run.cancel_requested
        if waited > KILL_AFTER_S:
            _signal(run.pid, signal.SIGKILL)
            store.finish(run.id, "cancelled", "Cancelled; the process did not stop and was killed.")
        elif waited > TERM_AFTER_S:
            _signal(run.pid, signal.SIGTERM)


def _signal(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def cancel(run_id: str, store: RunStore | None = None) -> Run:
    """Ask a run to stop. A run whose process is already gone is marked cancelled at once."""
    store = store or RunStore(recover=False)
    run = store.get(run_id)
    if not run.active:
        return run
    store.request_cancel(run_id)
    if not process_alive(run.pid, run.pid_start) and run.pid:
        store.finish(run_id, "cancelled", "Cancelled before its process started.")
    return store.get(run_id)


def wait(run_ids: list[str], store: RunStore | None = None, timeout: float = 120.0) -> list[Run]:
    """Block until the runs finish (tests, scripts); KdvizError after ``timeout`` seconds."""
    store = store or RunStore(recover=False)
    deadline = time.monotonic() + timeout
    while True:
        refresh(store)
        runs = [store.get(run_id) for run_id in run_ids]
        if not any(run.active for run in runs):
            return runs
        if time.monotonic() > deadline:
            raise KdvizError(f"Runs {', '.join(run_ids)} did not finish in {timeout:g} s.")
        time.sleep(0.1)


def eta_text(seconds: float | None) -> str:
    """ "1 min 05 s left", "12 s left" or "" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0, round(seconds))
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s left"
    return f"{seconds} s left"


# ---------------------------------------------------------------------------- running


class MetricsWriter:
    """Turns ``on_step`` / ``on_epoch`` calls into metric rows, written with one executemany at
    most every ``FLUSH_EVERY_S``, so logging never slows training.

    Training losses are averaged over the steps since the last point and one point is kept every
    ``POINT_EVERY_S``: a fast run on a small model (one call per step) does not flood the store,
    and a slow one still gets a point per call. Also keeps the run row's step, total steps,
    epoch and time left current.
    """

    PARTS = ("loss", "task_loss", "kd_loss")

    def __init__(self, store: RunStore, run_id: str, cfg: Any) -> None:
        self.store, self.run_id = store, run_id
        self.split = cfg.eval_split
        self.log_kd = cfg.kind == "distill" and (cfg.method == "dkd" or cfg.alpha > 0)
        self.rows: list[tuple[int, float, str, float]] = []
        self.progress: dict[str, Any] = {}
        self.last_flush = self.last_point = time.monotonic()
        self.first: tuple[float, int] | None = None  # (time, step) of the first on_step
        self.sums: dict[str, float] = {}  # loss parts summed since the last point
        self.count = 0
        self.at: tuple[int, float, float] = (
            0,
            0.0,
            float("nan"),
        )  # step, epoch, lr of the last call

    def on_step(self, m: dict[str, Any]) -> None:
        step, epoch = int(m["step"]), float(m["epoch"])
        for name in self.PARTS:
            if name in m:
                self.sums[name] = self.sums.get(name, 0.0) + float(m[name])
        self.count += 1
        self.at = (step, epoch, float(m.get("lr", float("nan"))))
        now = time.monotonic()
        total = round(step / m["progress"]) if m.get("progress") else 0
        eta = None
        if self.first is None:
            self.first = (now, step)
        elif step > self.first[1] and total:
            rate = (now - self.first[0]) / (step - self.first[1])  # seconds per step
            eta = rate * (total - step)
        self.progress = {"step": step, "total_steps": total, "epoch": epoch, "eta": eta}
        if now - self.last_point >= POINT_EVERY_S:
            self._point()
        if now - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def _point(self) -> None:
        """One point per training curve: the mean of each loss part since the last point."""
        if self.count:
            step, epoch, lr = self.at
            names = ["loss", "task_loss"] + (["kd_loss"] if self.log_kd else [])
            self.rows += [
                (step, epoch, f"train/{n}", self.sums[n] / self.count)
                for n in names
                if n in self.sums
            ]
            self.rows.append((step, epoch, "lr", lr))
        self.sums, self.count = {}, 0
        self.last_point = time.monotonic()

    def on_epoch(self, m: dict[str, Any]) -> None:
        self._point()  # the training curves reach the epoch's end
        step, epoch = int(m.get("step", 0)), float(m.get("epoch", 0))
        for key in ("accuracy", "nll", "ece", "agreement", "kl"):
            if key in m:
                self.rows.append((step, epoch, f"{self.split}/{key}", m[key]))
        if "images_per_s" in m:  # the epoch's training speed (the Distill page shows it)
            self.rows.append((step, epoch, "train/images_per_s", m["images_per_s"]))
        self.progress["epoch"] = epoch
        self.flush()

    def close(self) -> None:
        """Write whatever is pending (the run ended)."""
        self._point()
        self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        self.store.log_metrics(self.run_id, rows, **self.progress)
        self.last_flush = time.monotonic()


class StopFlag:
    """``should_stop`` for ``fit``: true once a watched run's cancel flag is set or SIGTERM
    arrived. Reads the store at most every STOP_POLL_S (``force`` reads it now). ``ids`` may be
    changed: an experiment watches its own run and the run it is training."""

    def __init__(self, store: RunStore, *run_ids: str) -> None:
        self.store, self.ids = store, list(run_ids)
        self.stopped = False
        self.last_check = 0.0

    def __call__(self, force: bool = False) -> bool:
        if self.stopped:
            return True
        now = time.monotonic()
        if force or now - self.last_check >= STOP_POLL_S:
            self.last_check = now
            self.stopped = any(self.store.cancel_requested(i) for i in self.ids)
        return self.stopped


def execute_run(
    store: RunStore,
    run_id: str,
    cfg: Any,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    show_progress: bool = False,
    stop: Any = None,
    fit_kwargs: dict[str, Any] | None = None,
) -> RunResult:
    """Run ``fit`` for a recorded run, logging into the store; the one path of CLI and worker runs.

    ``fit_kwargs`` go to ``engine.fit`` as they are (the experiments' teacher hooks).

    Any exception marks the run failed (KeyboardInterrupt: cancelled) and propagates. Until the
    first step, the run's ``message`` names the stage it is in (``stage_text``).
    """
    _safe_stage(store, run_id, "loading PyTorch")
    from kdviz.engine import describe_device, fit, pick_device

    writer = MetricsWriter(store, run_id, cfg)
    stop = stop or StopFlag(store, run_id)

    def epoch_hook(metrics: dict[str, Any]) -> None:
        writer.on_epoch(metrics)
        if on_epoch is not None:
            on_epoch(metrics)

    try:
        store.update(run_id, device=describe_device(pick_device(cfg.device)))
        result = fit(
            cfg,
            on_step=writer.on_step,
            on_epoch=epoch_hook,
            should_stop=stop,
            save=True,
            show_progress=show_progress,
            on_stage=StageWriter(store, run_id),
            **(fit_kwargs or {}),
        )
    except KeyboardInterrupt:
        _safe_flush(writer)
        _finish_quietly(store, run_id, "cancelled", "Stopped from the keyboard (Ctrl-C).")
        raise
    except KdvizError as err:
        _safe_flush(writer)
        _finish_quietly(store, run_id, "failed", str(err))
        raise
    except BaseException as err:
        _safe_flush(writer)
        sentence = write_failure(err, cfg)
        _finish_quietly(store, run_id, "failed", sentence or f"{type(err).__name__}: {err}".strip())
        if sentence:
            raise KdvizError(sentence) from err
        raise
    writer.close()
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str))}
    metrics["seconds"] = result.seconds
    store.finish(
        run_id,
        result.status,
        result.message,
        metrics=metrics,
        device=result.device,
        checkpoint=result.checkpoint or cfg.out,
        step=writer.progress.get("step", 0),
    )
    if result.checkpoint:
        stem = Path(result.checkpoint)
        # with_name, not with_suffix: a stem such as "...-T2.5-s0" has a dot in its name
        store.add_artifact(run_id, "checkpoint", stem.with_name(stem.name + ".safetensors"))
        store.add_artifact(run_id, "card", stem.with_name(stem.name + ".json"))
    return result


def stage_text(stage: str, done: int, total: int) -> str:
    """What a run's progress line says before its first step: "computing teacher logits 3,072/10,000"."""
    if stage == "teacher logits" and total:
        return f"computing teacher logits {done:,}/{total:,} images"
    if stage == "teacher logits":
        return "computing teacher logits"
    if stage == "training":
        return "training: the first steps"
    return stage


class StageWriter:
    """``on_stage`` for ``fit``: the stage goes to the run's ``message`` (the page shows it), its
    n/N at most every STAGE_EVERY_S so a fast stage does not write the store per batch."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.last: tuple[str, float] = ("", 0.0)

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self.last[0] and done < total and now - self.last[1] < STAGE_EVERY_S:
            return
        self.last = (stage, now)
        _safe_stage(self.store, self.run_id, stage_text(stage, done, total))


def _safe_stage(store: RunStore, run_id: str, text: str) -> None:
    with contextlib.suppress(KdvizError, sqlite3.Error, OSError):  # a label never stops a run
        store.update(run_id, message=text)


def _safe_flush(writer: MetricsWriter) -> None:
    with contextlib.suppress(Exception):  # the failure reported matters more than the metrics
        writer.close()


def _finish_quietly(store: RunStore, run_id: str, status: str, message: str) -> None:
    """Record how a run ended, if the store can take it. When it cannot (a full disk, a busy or
    read-only store) the row stays active with this process's pid, and ``recover`` marks it
    interrupted once the process is gone: the failure itself is what the user must see."""
    with contextlib.suppress(KdvizError, sqlite3.Error, OSError):
        store.finish(run_id, status, message)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO}


def write_failure(err: BaseException, cfg: Any) -> str:
    """One sentence when err is a failed write of the run's files (disk full, read-only, I/O
    error), else "". safetensors reports these as SafetensorError, not OSError."""
    is_os = isinstance(err, OSError) and err.errno in _WRITE_ERRNOS
    text = str(err)
    is_st = type(err).__name__ == "SafetensorError" and ("I/O" in text or "os error" in text)
    if not (is_os or is_st):
        return ""
    from kdviz.paths import checkpoints_dir, storage_problem

    stem = Path(cfg.out) if cfg.out else checkpoints_dir() / (cfg.name or "checkpoint")
    folder = stem.parent
    problem = storage_problem(folder)
    kept = stem.with_name(stem.name + ".safetensors").exists()
    note = " (the checkpoint of its last finished epoch is kept)" if kept else ""
    if problem == "full" or "space left" in text.lower():
        return f"The run stopped: no space is left on the disk of {folder}; free some space and start it again{note}."
    if problem == "read-only":
        return f"The run stopped: {folder} is read-only; set KDVIZ_HOME to a writable folder and start it again{note}."
    return f"The run stopped: writing to {folder} failed ({err}); check that disk and start it again{note}."


def record_cli_run(cfg: Any, store: RunStore | None = None) -> tuple[RunStore, Run]:
    """Record a foreground ``kdviz train`` / ``kdviz distill`` run (it does not wait in the queue)."""
    from kdviz.engine import default_name
    from kdviz.paths import checkpoints_dir

    store = store or RunStore()
    name = cfg.name or default_name(cfg)
    out = cfg.out or str(checkpoints_dir() / name)
    from kdviz.distributed import env_world_size

    run = store.create_run(
        {**cfg.to_dict(), "world_size": env_world_size()},  # torchrun's process count
        status="running",
        name=name,
        source="cli",
        pid=os.getpid(),
        checkpoint=out,
    )
    return store, run


# ---------------------------------------------------------------------------- the worker


def become_worker(store: RunStore, run_id: str) -> StopFlag:
    """Record this process as the run's and make SIGTERM a cancel; returns the run's StopFlag."""
    store.set_process(run_id, os.getpid())
    stop = StopFlag(store, run_id)

    def on_term(_signum: int, _frame: Any) -> None:  # SIGTERM: the cancel fallback
        stop.stopped = True

    signal.signal(signal.SIGTERM, on_term)
    return stop


def wait_for_slot(
    store: RunStore,
    run_id: str,
    stop: StopFlag,
    *,
    on_next_in_line: Callable[[], None] | None = None,
) -> bool:
    """Wait in the queue until this run claims a slot (True). False when it left the queue
    meanwhile: gone, started elsewhere, or cancelled (then marked so here)."""
    while not store.claim_slot(run_id):
        current = store.find(run_id)
        if current is None or current.status != "queued":
            return False
        if stop.stopped or current.cancel_requested is not None:
            store.finish(run_id, "cancelled", "Cancelled while waiting in the queue.")
            return False
        if on_next_in_line is not None and store.queue_position(run_id)[0] == 1:
            on_next_in_line()
            on_next_in_line = None  # once
        store.recover()  # a dead run ahead must not hold the queue
        time.sleep(QUEUE_POLL_S)
    return True


def run_worker(run_id: str) -> int:
    """``kdviz worker RUN_ID``: wait for a slot, then execute the run. Returns the exit status."""
    store = RunStore(recover=False)
    run = store.find(run_id)
    if run is None or run.status != "queued":
        print(f"kdviz worker: run {run_id} is not queued; nothing to do.", file=sys.stderr)
        return 0
    stop = become_worker(store, run_id)

    def warm_up() -> None:
        # Next in line: import torch and load the data now, so training starts the moment
        # the slot frees (only the next run does this, not the whole queue).
        threading.Thread(target=_warm_up, args=(run.config,), daemon=True).start()

    if not wait_for_slot(store, run_id, stop, on_next_in_line=warm_up):
        return 0
    if stop.stopped:
        store.finish(run_id, "cancelled", "Cancelled before it started.")
        return 0
    run = store.get(run_id)
    print(f"kdviz worker: run {run_id} started (pid {os.getpid()})", file=sys.stderr, flush=True)
    _safe_stage(store, run_id, "loading PyTorch")  # the config's classes import torch
    try:
        cfg = config_from_dict(run.config)
        _limit_threads(cfg, run.max_running)
        result = execute_run(store, run_id, cfg, stop=stop)
    except KdvizError as err:  # execute_run marked the run failed; earlier steps did not
        _finish_quietly(store, run_id, "failed", str(err))
        print(f"kdviz worker: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        _finish_quietly(store, run_id, "failed", f"{type(err).__name__}: {err}")
        traceback.print_exc()  # the worker's log, for whoever debugs it; the page shows the message
        return 1
    print(f"kdviz worker: {result.status}: {result.message}", file=sys.stderr, flush=True)
    return 0 if result.status in ("done", "cancelled") else 1


def _warm_up(config: dict[str, Any]) -> None:
    """What every run pays once per process (about 5 s on 2 cores), done off the queue's thread."""
    try:
        import torch

        from kdviz.data import load_dataset

        param = torch.zeros(1, requires_grad=True)
        param.grad = torch.zeros(1)
        torch.optim.AdamW([param]).step()  # the first optimiser step imports torch._dynamo
        for split in (config.get("train_split", "train"), config.get("eval_split", "val")):
            load_dataset(config.get("dataset", ""), split)
    except Exception:  # the run itself reports any real problem
        pass


def _limit_threads(cfg: Any, max_running: int) -> None:
    """Share the CPU cores between the runs allowed at once."""
    import torch

    if max_running > 1 and cfg.device in ("cpu", "auto", ""):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max_running))
