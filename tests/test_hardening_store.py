"""The run store and KDVIZ_HOME under faults: busy, read-only, full, damaged, in the way.

Each fault gets a sentence that says what is true; "damaged" only when the integrity check fails.
Read-only and full file systems are real tmpfs mounts (this needs root; skipped only when mount
is refused).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdviz import cli, jobs, paths, runs, storefaults
from kdviz.errors import KdvizError
from kdviz.runs import RunStore


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m"):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system of folder to the last byte; returns the filler to delete."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 4096, 1):  # unbuffered, down to the last byte
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    return filler


def one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.endswith(".")
    return text


def store_with_a_run(home: Path) -> tuple[RunStore, str]:
    store = RunStore(home / "runs.sqlite")
    run = store.create_run({"kind": "train", "dataset": "digits"}, name="kept")
    store.finish(run.id, "done", "ok", metrics={"accuracy": 0.9})
    return store, run.id


# --------------------------------------------------------------------------------------------
# busy


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(30)
"""


def test_a_locked_store_is_busy_and_names_the_holder(kdviz_home, monkeypatch):
    store, run_id = store_with_a_run(kdviz_home)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(runs, "BUSY_TIMEOUT_S", 0.3)
        monkeypatch.setattr(runs, "_initialised", set())  # opening it afresh needs no write lock
        busy = RunStore()
        assert [r.id for r in busy.list_runs()] == [run_id]  # WAL: readers are not blocked
        with pytest.raises(KdvizError, match=f"is busy: process {holder.pid} ") as err:
            busy.create_run({"kind": "train"})
        text = one_sentence(err)
        assert "damaged" not in text and "0.3 s kdviz waited" in text
    finally:
        holder.kill()
        holder.wait()
    assert busy.integrity_ok() and busy.create_run({"kind": "train"}).status == "queued"


def test_lock_holder_in_this_process_and_unknown():
    store, _ = store_with_a_run(paths.kdviz_home())
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        assert storefaults.lock_holder(store.path) == "another connection of this process"
    finally:
        conn.close()
    assert storefaults.lock_holder(store.path) == "another kdviz process"


# --------------------------------------------------------------------------------------------
# read-only


def test_a_read_only_store_lists_its_runs_and_refuses_writes_with_the_truth(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "ro") as home:
        _, run_id = store_with_a_run(home)
        remount_read_only(home)
        monkeypatch.setenv("KDVIZ_HOME", str(home))
        store = RunStore()
        assert store.read_only
        listed = store.list_runs()
        assert [r.id for r in listed] == [run_id] and listed[0].metrics == {"accuracy": 0.9}
        with pytest.raises(KdvizError, match="is read-only") as err:
            store.create_run({"kind": "train"})
        assert "damaged" not in one_sentence(err)
        assert jobs.refresh(store) is store  # the app's poll: recover leaves a read-only store be
        # the CLI lists it too (exit 0), and says read-only when asked to delete
        assert cli.main(["runs"]) == 0
        assert cli.main(["runs", "--delete", run_id]) == 2
        assert not (home / "runs.sqlite-shm").exists()  # nothing was written


def test_an_empty_read_only_kdviz_home_is_a_sentence(tmp_path, monkeypatch, capsys):
    with tmpfs(tmp_path / "ro") as home:
        remount_read_only(home)
        monkeypatch.setenv("KDVIZ_HOME", str(home))
        with pytest.raises(KdvizError, match="checkpoints folder .* cannot be created") as err:
            paths.checkpoints_dir()
        assert "Read-only file system" in one_sentence(err)
        with pytest.raises(KdvizError, match="is read-only"):
            RunStore()
        monkeypatch.setenv("KDVIZ_HOME", str(home / "sub"))
        with pytest.raises(KdvizError, match="KDVIZ_HOME .*/sub cannot be created"):
            paths.kdviz_home()
        assert cli.main(["runs"]) == 2
        assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# full


def test_a_full_disk_says_no_space_and_the_store_survives(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "full") as home:
        store, run_id = store_with_a_run(home)
        filler = fill(home)
        with pytest.raises(KdvizError, match="no space is left on its disk") as err:
            for i in range(200):  # the WAL grows until the disk refuses
                store.log_metrics(run_id, [(i, 0.0, "x", float(i))] * 50)
        assert "damaged" not in one_sentence(err)
        monkeypatch.setattr(runs, "_initialised", set())
        with pytest.raises(KdvizError, match="no space is left"):
            RunStore(home / "runs.sqlite").create_run({"kind": "train"})
        filler.unlink()
        again = RunStore(home / "runs.sqlite")
        assert again.integrity_ok() and again.get(run_id).status == "done"


def test_the_disk_filling_during_a_run_ends_in_a_sentence(tmp_path, monkeypatch, capsys):
    """Epoch 1's checkpoint fits, epoch 2's does not: exit 2 with one sentence, the run failed,
    and epoch 1's checkpoint still loads."""
    from kdviz.models import load_checkpoint

    with tmpfs(tmp_path / "full") as home:
        monkeypatch.setenv("KDVIZ_HOME", str(home))
        RunStore()
        paths.checkpoints_dir()
        free = os.statvfs(home).f_bavail * os.statvfs(home).f_frsize
        (home / "filler").write_bytes(b"\0" * (free - 700_000))  # room for one 450 kB checkpoint
        code = cli.main(
            ["train", "--dataset", "digits", "--arch", "mlp-300-300", "--epochs", "2", "--name", "big",
             "--device", "cpu"]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert "no space is left on the disk of" in err and "last finished epoch is kept" in err
        run = RunStore().list_runs()[0]
        assert run.status == "failed" and "no space" in run.message
        model, card = load_checkpoint(str(home / "checkpoints" / "big"))
        assert card.arch == "mlp-300-300"


@pytest.mark.slow  # about 15 s on 2 shared cores; the CLI case above is the fast one
def test_disk_full_for_checkpoint_and_store_alike_keeps_the_store_and_the_last_epoch(
    tmp_path, monkeypatch
):
    """The issue's case: after epoch 1 the disk is full, so epoch 2's checkpoint fails
    (SafetensorError) and so does the store. One sentence; the store survives; epoch 1 loads; the
    run is marked interrupted once its process is gone."""
    from kdviz.engine import TrainConfig
    from kdviz.models import load_checkpoint

    with tmpfs(tmp_path / "full") as home:
        monkeypatch.setenv("KDVIZ_HOME", str(home))
        cfg = TrainConfig(dataset="digits", arch="mlp-300-300", epochs=3, device="cpu",
                          name="big", out=str(paths.checkpoints_dir() / "big"))  # fmt: skip
        store, run = jobs.record_cli_run(cfg)
        fillers = []

        def fill_after_epoch_1(metrics):
            if metrics["epoch"] == 1:
                fillers.append(fill(home))

        with pytest.raises(KdvizError, match="no space is left on") as err:
            jobs.execute_run(store, run.id, cfg, on_epoch=fill_after_epoch_1)
        one_sentence(err)
        fillers[0].unlink()
        assert RunStore(recover=False).get(run.id).status == "running"  # its end was not recorded
        model, card = load_checkpoint(str(home / "checkpoints" / "big"))
        assert card.metrics["epochs_completed"] == 1
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE runs SET pid = ?, pid_start = '' WHERE id = ?", (dead.pid, run.id))
        after = RunStore()
        assert after.integrity_ok()
        final = after.get(run.id)
        assert final.status == "interrupted" and "last finished epoch is kept" in final.message


def test_a_store_that_cannot_record_the_failure_leaves_the_run_to_recover(monkeypatch):
    """The checkpoint write fails and so does the store: the user still gets the sentence, and
    the run, left active, is marked interrupted once its process is gone."""
    from kdviz.engine import TrainConfig

    store = RunStore()
    cfg = TrainConfig(
        dataset="digits", arch="mlp-8", epochs=1, out=str(paths.checkpoints_dir() / "x")
    )
    run = store.create_run(cfg.to_dict(), status="running", pid=os.getpid())

    def fit(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def finish(*args, **kwargs):
        raise KdvizError("The run store ... cannot be used: no space is left on its disk.")

    with monkeypatch.context() as patch:
        patch.setattr("kdviz.engine.fit", fit)
        patch.setattr(store, "finish", finish)
        with pytest.raises(KdvizError, match="The run stopped: no space is left on the disk of"):
            jobs.execute_run(store, run.id, cfg)
    assert RunStore(recover=False).get(run.id).status == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    RunStore(recover=False).update(run.id, pid=dead.pid, pid_start="")
    assert RunStore().get(run.id).status == "interrupted"


# --------------------------------------------------------------------------------------------
# damaged, or only looking damaged


def test_damaged_only_when_the_integrity_check_fails(kdviz_home):
    store, run_id = store_with_a_run(kdviz_home)
    healthy = store._explain(sqlite3.DatabaseError("database disk image is malformed"))
    assert "damaged" not in str(healthy) and "try again" in str(healthy)

    bad = kdviz_home / "bad.sqlite"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(KdvizError, match="is damaged \\(its integrity check fails\\)"):
        RunStore(bad)


def test_runs_sqlite_that_is_a_folder(kdviz_home):
    (kdviz_home / "runs.sqlite").mkdir()
    with pytest.raises(KdvizError, match="runs.sqlite is a folder, not a database file") as err:
        RunStore()
    one_sentence(err)


def test_a_row_with_invalid_json_is_skipped_and_can_be_deleted(kdviz_home, capsys):
    store, good = store_with_a_run(kdviz_home)
    bad = store.create_run({"kind": "train"}, name="bad").id
    odd = store.create_run({"kind": "train"}, name="odd").id
    store.finish(bad, "failed", "x")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET config = '{not json' WHERE id = ?", (bad,))
        conn.execute("UPDATE runs SET metrics = '[1, 2' WHERE id = ?", (odd,))
    assert [r.id for r in store.list_runs()] == [odd, good] and store.skipped == [bad]
    assert store.get(odd).metrics == {}  # only shown: an empty table is honest
    with pytest.raises(KdvizError, match=f"stored record of run {bad} is not valid"):
        store.get(bad)
    assert cli.main(["runs"]) == 0
    assert f"kdviz runs --delete {bad}" in capsys.readouterr().err
    assert cli.main(["runs", "--delete", bad]) == 0
    assert store.find(odd) is not None and store.list_runs() and store.skipped == []


@pytest.mark.parametrize(
    "change",
    [
        "pid = 'abc', status = 'running'",  # SQLite keeps text in an INTEGER column
        "step = 'many'",
        "created = 'yesterday'",
        "status = 'exploded'",
        "config = '[1, 2]'",  # JSON, but not an object
    ],
)
def test_rows_with_values_of_the_wrong_kind_are_skipped_and_recover_survives(kdviz_home, change):
    store, good = store_with_a_run(kdviz_home)
    bad = store.create_run({"kind": "train"}, name="bad").id
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute(f"UPDATE runs SET {change} WHERE id = ?", (bad,))
    conn.close()
    store.recover()  # no TypeError on a text pid: the row is marked, not crashed on
    assert [r.id for r in RunStore().list_runs()] == [good]
    with pytest.raises(KdvizError, match=f"stored record of run {bad} is not valid"):
        store.get(bad)


def test_a_database_without_the_runs_table_is_not_called_damaged(kdviz_home):
    other = kdviz_home / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # looks set up: kdviz only reads it
        conn.execute("CREATE TABLE notes (x)")
        conn.execute("PRAGMA user_version = 1")
    with pytest.raises(KdvizError, match="is not a kdviz run store of this version") as err:
        RunStore(other).list_runs()
    assert "damaged" not in one_sentence(err)


def test_recover_marks_a_dead_run_with_invalid_json_interrupted(kdviz_home):
    store = RunStore()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = store.create_run({"kind": "train"}, status="running", pid=dead.pid)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET config = 'nope', pid_start = '' WHERE id = ?", (run.id,))
    assert store.recover() == [run.id]


# --------------------------------------------------------------------------------------------
# KDVIZ_HOME in the way


@pytest.mark.parametrize("sub", ["", "checkpoints", "cache"])
def test_a_file_where_a_folder_belongs(tmp_path, monkeypatch, sub):
    home = tmp_path / "home"
    if sub:
        home.mkdir()
    (home / sub if sub else home).write_text("in the way")
    monkeypatch.setenv("KDVIZ_HOME", str(home))
    with pytest.raises(KdvizError, match="is a file, not a folder") as err:
        paths.checkpoints_dir() if sub != "cache" else paths.cache_dir()
    one_sentence(err)


def test_kdviz_list_with_home_a_file_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "home").write_text("x")
    monkeypatch.setenv("KDVIZ_HOME", str(tmp_path / "home"))
    start = time.monotonic()
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert time.monotonic() - start < 5
