"""Background runs: worker processes, the queue, cancel, SIGKILL recovery, divergence, CLI records.

A tiny teacher is trained on `digits` per test; runs use the `digits` data and a 30-30 MLP so each
worker spends its time starting Python, not training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from kdviz import jobs
from kdviz.cli import main
from kdviz.engine import DistillConfig, TrainConfig, fit
from kdviz.errors import KdvizError
from kdviz.models import list_checkpoints, load_checkpoint, resolve_checkpoint
from kdviz.runs import RunStore

pytestmark = pytest.mark.usefixtures("no_stray_workers")


@pytest.fixture
def teacher(tmp_path) -> str:
    stem = tmp_path / "teacher"
    cfg = TrainConfig(
        dataset="digits", arch="mlp-30-30", epochs=1, batch_size=64, device="cpu", out=str(stem)
    )
    assert fit(cfg).status == "done"
    return str(stem)


def distill_cfg(teacher: str, **kwargs) -> DistillConfig:
    base = dict(
        dataset="digits",
        arch="mlp-30-30",
        epochs=2,
        batch_size=64,
        device="cpu",
        eval_split="test",
        teacher=teacher,
        log_every=2,
    )
    return DistillConfig(**{**base, **kwargs})


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow  # test_ui_distill starts the same pair through the page
def test_student_and_baseline_run_in_their_own_processes_one_after_the_other(teacher, monkeypatch):
    monkeypatch.delenv("KDVIZ_MAX_RUNS", raising=False)
    store = RunStore()
    student, baseline = jobs.start_distill(distill_cfg(teacher), baseline=True, store=store)
    assert student.status == "queued" and student.pid and student.pid != os.getpid()
    assert baseline.role == "baseline" and baseline.group_id == student.id
    assert baseline.parent_id == student.id and baseline.config["alpha"] == 0.0

    student, baseline = jobs.wait([student.id, baseline.id], store, timeout=90)
    assert student.status == "done", student.message
    assert baseline.status == "done", baseline.message
    assert baseline.started >= student.finished - 0.05  # a CPU runs one at a time
    assert student.device.startswith("CPU") and 0 <= student.metrics["accuracy"] <= 1

    names = set(store.metric_names([student.id]))
    assert {"train/loss", "train/kd_loss", "train/task_loss", "test/accuracy"} <= names
    assert {"test/agreement", "test/kl"} <= names
    base_names = set(store.metric_names([baseline.id]))
    assert {"test/accuracy", "test/agreement", "test/kl"} <= base_names
    assert "train/kd_loss" not in base_names

    # the students are in every picker (list_checkpoints) and load by their display name
    shown = {name for name, _path, _card in list_checkpoints()}
    for run in (student, baseline):
        assert f"{run.id}/student" in shown
        assert resolve_checkpoint(f"{run.id}/student") == jobs.checkpoint_stem(run.id)
        model, card = load_checkpoint(f"{run.id}/student")
        assert card.name == run.name and card.metrics["epochs_completed"] == 2
    assert set(store.artifacts(student.id)) == {"log", "checkpoint", "card"}


@pytest.mark.slow  # test_ui_distill cancels through the page
def test_cancel_a_running_run_and_a_queued_one(teacher, monkeypatch):
    monkeypatch.setenv("KDVIZ_MAX_RUNS", "1")
    store = RunStore()
    (first,) = jobs.start_distill(distill_cfg(teacher, epochs=3000), baseline=False, store=store)
    (second,) = jobs.start_distill(distill_cfg(teacher, epochs=1), baseline=False, store=store)
    wait_until(lambda: store.get(first.id).step > 0, what="the first run to train")
    assert store.queue_position(second.id) == (1, 1)

    jobs.cancel(second.id, store)
    second = wait_until(
        lambda: (r := store.get(second.id)).status != "queued" and r, what="queued cancel"
    )
    assert second.status == "cancelled" and "queue" in second.message

    asked = time.monotonic()
    jobs.cancel(first.id, store)
    (first,) = jobs.wait([first.id], store, timeout=30)
    assert first.status == "cancelled" and first.message.startswith("Cancelled at step")
    assert time.monotonic() - asked < 5


def test_a_run_killed_mid_epoch_is_interrupted_and_its_last_epoch_checkpoint_loads(teacher):
    store = RunStore()
    cfg = distill_cfg(teacher, epochs=400, batch_size=1)  # epochs of ~1 s: flushes land mid-epoch
    (run,) = jobs.start_distill(cfg, baseline=False, store=store)
    stem = jobs.checkpoint_stem(run.id)

    def mid_epoch_after_the_first():
        current = store.get(run.id)
        ok = current.epoch > 1 and 0.05 < current.epoch % 1 < 0.95
        return current if ok and stem.with_suffix(".json").exists() else None

    running = wait_until(mid_epoch_after_the_first, what="a later epoch")
    assert running.status == "running"
    os.kill(running.pid, signal.SIGKILL)
    wait_until(lambda: not jobs.process_alive(running.pid, running.pid_start), what="death")

    reopened = RunStore()  # opening the store finds the dead run
    assert reopened.integrity_ok()
    run = reopened.get(run.id)
    assert run.status == "interrupted"
    assert "stopped while training" in run.message and "checkpoint" in run.message
    model, card = load_checkpoint(stem)
    assert card.metrics["epochs_completed"] >= 1


def test_an_absurd_learning_rate_ends_diverged_with_a_message(teacher):
    # in this process (a worker runs the same execute_run): no second Python to start
    store = RunStore()
    cfg = distill_cfg(teacher, lr=1e30, epochs=3)
    run = store.create_run(cfg.to_dict(), status="running", pid=os.getpid())
    result = jobs.execute_run(store, run.id, cfg)
    run = store.get(run.id)
    assert result.status == run.status == "diverged"
    assert "lower the learning rate" in run.message and run.finished


def test_cli_runs_are_recorded_and_listed(teacher, tmp_path, capsys):
    out = tmp_path / "cli-student"
    args = ["distill", "--teacher", teacher, "--student", "mlp-30-30", "--dataset", "digits"]
    args += ["--epochs", "1", "--device", "cpu", "--out", str(out), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    run = RunStore().get(result["run_id"])
    assert run.source == "cli" and run.status == "done" and run.pid == os.getpid()
    assert run.checkpoint == str(out) and run.metrics["accuracy"] == result["metrics"]["accuracy"]
    assert "val/accuracy" in RunStore().metric_names([run.id])

    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [run.id]
    assert listed[0]["config"]["teacher"] == teacher and listed[0]["status"] == "done"
    assert main(["runs"]) == 0
    assert run.id in capsys.readouterr().out


def test_worker_is_hidden_from_help_and_ignores_unknown_runs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "worker" not in capsys.readouterr().out
    assert main(["worker", "no-such-run"]) == 0


def test_a_cancel_that_is_ignored_escalates_to_kill():
    store = RunStore()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        run = store.create_run({"kind": "train"}, status="running", pid=proc.pid)
        store.request_cancel(run.id)
        store.update(run.id, cancel_requested=time.time() - jobs.KILL_AFTER_S - 1)
        jobs.refresh(store)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert store.get(run.id).status == "cancelled"
    finally:
        proc.kill()
        proc.wait()


def test_a_run_that_raises_is_failed_with_the_sentence(teacher):
    store = RunStore()
    cfg = distill_cfg(teacher, omit_classes=tuple(range(10)))
    run = store.create_run(cfg.to_dict(), status="running", pid=os.getpid())
    with pytest.raises(KdvizError, match="transfer set is empty"):
        jobs.execute_run(store, run.id, cfg)
    run = store.get(run.id)
    assert run.status == "failed" and "transfer set is empty" in run.message
