"""The run store: rows, the queue, metrics, recovery of dead runs, deletion, crash safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from kdviz.errors import KdvizError
from kdviz.paths import kdviz_home, runs_dir
from kdviz.runs import (
    RunStore,
    new_run_id,
    process_alive,
    process_start_token,
    run_folder,
)

CFG = {"kind": "distill", "teacher": "t", "arch": "mlp-30-30", "epochs": 2}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_store_is_sqlite_in_wal_mode_in_kdviz_home():
    store = RunStore()
    assert store.path.parent == kdviz_home()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "metrics", "artifacts"} <= tables
    assert store.integrity_ok()


def test_create_get_list_update_round_trip():
    store = RunStore()
    run = store.create_run(CFG, name="a", device="CPU (2 threads)")
    assert run.status == "queued" and run.kind == "distill" and run.group_id == run.id
    assert run.config == CFG and run.progress == 0.0
    store.update(run.id, step=5, total_steps=10, metrics={"accuracy": 0.5})
    got = store.get(run.id)
    assert got.progress == 0.5 and got.metrics == {"accuracy": 0.5}
    other = store.create_run({**CFG, "kind": "train"}, group_id=run.id, parent_id=run.id)
    assert [r.id for r in store.list_runs()] == [other.id, run.id]  # newest first
    assert [r.id for r in store.group(run.id)] == [run.id, other.id]
    assert [r.id for r in store.list_runs(kind="train")] == [other.id]
    json.dumps(got.to_dict())  # what `kdviz runs --json` prints
    with pytest.raises(KdvizError, match="kdviz runs"):
        store.get("nope")


def test_finish_only_moves_active_runs_once():
    store = RunStore()
    run = store.create_run(CFG)
    assert store.finish(run.id, "done", "ok", metrics={"accuracy": 0.9})
    assert not store.finish(run.id, "failed", "late")
    got = store.get(run.id)
    assert got.status == "done" and got.message == "ok" and got.finished >= got.created
    with pytest.raises(ValueError):
        store.finish(run.id, "running")


def test_queue_is_first_come_first_served_with_a_width():
    store = RunStore()
    a, b, c = (store.create_run(CFG, max_running=1) for _ in range(3))
    assert not store.claim_slot(b.id)  # a is older
    assert store.queue_position(c.id) == (3, 0)
    assert store.claim_slot(a.id)
    assert store.claim_slot(a.id)  # idempotent for the holder
    assert not store.claim_slot(b.id)
    assert store.queue_position(b.id) == (1, 1)
    store.finish(a.id, "done")
    assert store.claim_slot(b.id) and not store.claim_slot(c.id)
    wide = store.create_run(CFG, max_running=3)  # started under a wider limit: still waits its turn
    store.finish(b.id, "done")
    assert not store.claim_slot(wide.id)  # c is older
    assert store.claim_slot(c.id) and store.claim_slot(wide.id)  # then both run (width 3)


def test_max_running_from_env_then_setting_then_default(monkeypatch):
    store = RunStore()
    monkeypatch.delenv("KDVIZ_MAX_RUNS", raising=False)
    assert store.max_running(default=1) == 1
    store.set_setting("max_running", 3)
    assert store.max_running(default=1) == 3
    monkeypatch.setenv("KDVIZ_MAX_RUNS", "2")
    assert store.max_running(default=1) == 2


def test_metrics_are_batched_and_non_finite_values_become_null():
    store = RunStore()
    run = store.create_run(CFG)
    rows = [(1, 0.1, "train/loss", 2.0), (2, 0.2, "train/loss", float("nan"))]
    assert store.log_metrics(run.id, rows, step=2, total_steps=20, epoch=0.2, eta=3.0) == 2
    got = store.metrics(run.id)
    assert [r["value"] for r in got] == [2.0, None]
    assert store.metrics(run.id, after_id=got[0]["id"])[0]["step"] == 2
    assert store.metric_names([run.id]) == ["train/loss"]
    assert store.get(run.id).step == 2 and store.get(run.id).eta == 3.0
    with pytest.raises(ValueError):
        store.log_metrics(run.id, [], status="done")


def test_process_identity_survives_pid_reuse():
    me = os.getpid()
    token = process_start_token(me)
    assert process_alive(me, token)
    assert not process_alive(me, token + "0")  # same pid, another process start: not the run
    assert not process_alive(_dead_pid())
    assert not process_alive(None)


def test_recover_marks_runs_with_dead_processes_interrupted():
    store = RunStore()
    alive = store.create_run(CFG, status="running", pid=os.getpid())
    dead = store.create_run(CFG, status="running", pid=_dead_pid())
    queued_dead = store.create_run(CFG, pid=_dead_pid())
    orphan = store.create_run(CFG)  # launcher died before recording a pid
    store.update(orphan.id, created=time.time() - 3600)
    fresh = store.create_run(CFG)  # its launcher is about to record the pid
    assert sorted(store.recover()) == sorted([dead.id, queued_dead.id, orphan.id])
    assert store.get(dead.id).status == "interrupted"
    assert "pid" in store.get(dead.id).message
    assert store.get(alive.id).status == "running"
    assert store.get(fresh.id).status == "queued"
    assert RunStore().get(queued_dead.id).status == "interrupted"  # and opening recovers too


def test_cancel_flag():
    store = RunStore()
    run = store.create_run(CFG)
    assert not store.cancel_requested(run.id)
    store.request_cancel(run.id)
    first = store.get(run.id).cancel_requested
    store.request_cancel(run.id)
    assert store.cancel_requested(run.id) and store.get(run.id).cancel_requested == first


def test_delete_removes_rows_and_files_but_not_active_runs():
    store = RunStore()
    run = store.create_run(CFG)
    folder = run_folder(run.id)
    folder.mkdir()
    (folder / "student.safetensors").write_bytes(b"x")
    store.log_metrics(run.id, [(1, 0.1, "train/loss", 1.0)])
    store.add_artifact(run.id, "checkpoint", folder / "student.safetensors")
    with pytest.raises(KdvizError, match="cancel it"):
        store.delete_run(run.id)
    store.finish(run.id, "cancelled")
    store.delete_run(run.id)
    assert store.find(run.id) is None and not folder.exists()
    assert store.metrics(run.id) == [] and store.artifacts(run.id) == {}


def test_run_folder_rejects_paths():
    assert run_folder("20250101-000000-abcdef") == runs_dir() / "20250101-000000-abcdef"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(KdvizError):
            run_folder(bad)
    assert new_run_id() != new_run_id()


WRITER = """
import sys, time
from kdviz.runs import RunStore
store = RunStore(recover=False)
run_id = sys.argv[1]
step = 0
while True:
    step += 1
    store.log_metrics(run_id, [(step, step / 10, "train/loss", 1.0 / step)] * 50, step=step)
    print(step, flush=True)
"""


def test_a_writer_killed_mid_transaction_leaves_the_store_intact(tmp_path):
    store = RunStore()
    run = store.create_run(CFG, status="running")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, run.id], stdout=subprocess.PIPE, text=True
    )
    store.set_process(run.id, proc.pid)
    for _ in range(20):  # let it commit a few batches, then kill it at a random point
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    reopened = RunStore()
    assert reopened.integrity_ok()
    assert reopened.get(run.id).status == "interrupted"
    rows = reopened.metrics(run.id)
    assert len(rows) >= 20 * 50 and len(rows) % 50 == 0  # whole batches only
