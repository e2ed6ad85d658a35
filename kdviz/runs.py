"""The run store: one SQLite database (WAL) in KDVIZ_HOME recording every run, its metrics and files.

Each run (from the browser or from ``kdviz train`` / ``kdviz distill``) is a row in ``runs``; its
curves are rows of ``metrics`` (run, step, epoch, name, value); its files (checkpoint, card, log)
are rows of ``artifacts`` and live under ``runs_dir()/RUN_ID/``. Every operation opens its own short
connection, so one ``RunStore`` may be shared by threads and by processes; WAL keeps readers and the
one writer out of each other's way, and a killed writer never leaves the file corrupt.

A run whose process is gone (killed, machine restarted) is marked ``interrupted`` by ``recover()``,
which runs whenever the store is opened and whenever the app or a waiting worker polls it. A process
is identified by its pid *and* its start time, so a recycled pid is not mistaken for the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdviz.errors import KdvizError
from kdviz.paths import kdviz_home, make_folder, runs_dir, storage_problem
from kdviz.storefaults import explain_store_error

STATUSES = ("queued", "running", "done", "failed", "cancelled", "diverged", "interrupted")
ACTIVE = ("queued", "running")  # a process is (or should be) behind these
FINISHED = ("done", "failed", "cancelled", "diverged", "interrupted")
DB_NAME = "runs.sqlite"
SCHEMA_VERSION = 1
QUEUED_WITHOUT_PROCESS_S = 120.0  # a queued row whose launcher never recorded a pid is abandoned
BUSY_TIMEOUT_S = 30.0  # how long a connection waits for another process's write lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- queue order
    id TEXT NOT NULL UNIQUE,                -- e.g. 20250131-142501-3fa9c1
    kind TEXT NOT NULL,                     -- "train" or "distill"
    name TEXT NOT NULL DEFAULT '',          -- checkpoint name shown in pickers
    role TEXT NOT NULL DEFAULT 'student',   -- "student" or "baseline"
    source TEXT NOT NULL DEFAULT 'app',     -- "app" or "cli"
    group_id TEXT NOT NULL DEFAULT '',      -- a student and its baseline share it
    parent_id TEXT NOT NULL DEFAULT '',     -- a baseline points at its student
    config TEXT NOT NULL,                   -- TrainConfig / DistillConfig.to_dict() as JSON
    status TEXT NOT NULL DEFAULT 'queued',
    message TEXT NOT NULL DEFAULT '',
    cancel_requested REAL,                  -- time the cancel was asked for; NULL if never
    pid INTEGER,
    pid_start TEXT NOT NULL DEFAULT '',     -- boot id + process start time (pid reuse guard)
    host TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    max_running INTEGER NOT NULL DEFAULT 1, -- queue width this run was started under
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    epoch REAL NOT NULL DEFAULT 0,
    eta REAL,                               -- seconds left, estimated from the step rate
    metrics TEXT NOT NULL DEFAULT '{}',     -- final (last epoch) metrics as JSON
    checkpoint TEXT NOT NULL DEFAULT '',    -- checkpoint stem path
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch REAL NOT NULL,
    name TEXT NOT NULL,                     -- e.g. "train/loss", "test/accuracy"
    value REAL                              -- NULL stands for NaN / infinity
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, id);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,                     -- "checkpoint", "card", "log"
    path TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, kind)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_RUN_COLUMNS = [
    "seq",
    "id",
    "kind",
    "name",
    "role",
    "source",
    "group_id",
    "parent_id",
    "config",
    "status",
    "message",
    "cancel_requested",
    "pid",
    "pid_start",
    "host",
    "device",
    "max_running",
    "step",
    "total_steps",
    "epoch",
    "eta",
    "metrics",
    "checkpoint",
    "created",
    "started",
    "finished",
    "updated",
]


@dataclass
class Run:
    """One row of the ``runs`` table, with its JSON columns decoded."""

    id: str
    kind: str  # "train" or "distill"
    config: dict[str, Any]
    status: str = "queued"
    name: str = ""
    role: str = "student"  # "student" or "baseline"
    source: str = "app"  # "app" or "cli"
    group_id: str = ""
    parent_id: str = ""
    message: str = ""
    cancel_requested: float | None = None
    pid: int | None = None
    pid_start: str = ""
    host: str = ""
    device: str = ""
    max_running: int = 1
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    eta: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    updated: float | None = None
    seq: int = 0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def progress(self) -> float:
        """Fraction of the optimiser steps done, in [0, 1]."""
        if self.status == "done":
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def folder(self) -> Path:
        return run_folder(self.id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``kdviz runs --json`` prints)."""
        out = {col: getattr(self, col) for col in _RUN_COLUMNS if col != "seq"}
        out["progress"] = self.progress
        out["world_size"] = int(self.config.get("world_size") or 1)  # torchrun processes
        return out


# ---------------------------------------------------------------------------- processes


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def process_start_token(pid: int) -> str:
    """Boot id + start time (clock ticks since boot) of a process; "" where /proc is missing.

    Together with the pid it names a process uniquely, so a recycled pid does not pass for a run.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()  # the name (field 2) may contain spaces
    return f"{_boot_id()}:{fields[19]}"  # field 22 of the line: starttime


def process_alive(pid: int | None, start_token: str = "") -> bool:
    """True while the process ``pid`` that had ``start_token`` runs (zombies count as gone)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): os.kill is all we can ask
    state = stat[stat.rindex(")") + 2 :].split()[0]
    if state in ("Z", "X"):
        return False
    return not start_token or process_start_token(pid) == start_token


def new_run_id() -> str:
    """Sortable, URL-safe and unique: local time plus 6 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_folder(run_id: str) -> Path:
    """The folder holding a run's files (its checkpoint stem is ``run_folder(id) / "student"``)."""
    if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise KdvizError(f"{run_id!r} is not a run id; copy one from `kdviz runs`.")
    return runs_dir() / run_id


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


# ---------------------------------------------------------------------------- the store

_initialised: set[str] = set()
_init_lock = threading.Lock()


class RunStore:
    """The SQLite run store at ``path`` (default ``KDVIZ_HOME/runs.sqlite``).

    Opening it creates the schema if needed and marks runs whose process is gone as interrupted.
    """

    def __init__(self, path: str | Path | None = None, *, recover: bool = True) -> None:
        self.path = Path(path) if path else kdviz_home() / DB_NAME
        make_folder(self.path.parent, "The run store's folder")
        if self.path.is_dir():
            raise KdvizError(
                f"The run store {self.path} is a folder, not a database file; move it aside and "
                "kdviz starts a new store there."
            )
        # a read-only store (an archived KDVIZ_HOME) can still be listed; nothing is written
        self.read_only = storage_problem(self.path.parent) == "read-only"
        self.skipped: list[str] = []  # ids of rows the last list_runs() could not decode
        if self.read_only and not self.path.exists():
            raise self._explain(sqlite3.OperationalError("unable to open database file"))
        if not self.read_only:
            self._ensure_schema()
        if recover and not self.read_only:
            self.recover()

    # -- connections

    def _open(self) -> sqlite3.Connection:
        if self.read_only:  # WAL needs a writable -shm file; immutable=1 reads without one
            uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?immutable=1"
            return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)

    @contextlib.contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; ``write=True`` wraps the block in one IMMEDIATE transaction.

        A store that cannot be used raises a KdvizError saying what is true: busy, read-only,
        no space left, or (only after ``PRAGMA integrity_check`` fails) damaged.
        """
        if write and self.read_only:
            raise self._explain(sqlite3.OperationalError("attempt to write a readonly database"))
        try:
            conn = self._open()
        except sqlite3.Error as err:
            raise self._explain(err) from err
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable on process crash
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):  # a full disk may refuse even this
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as err:
            if isinstance(err, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
                raise  # our bug, not the store's state
            raise self._explain(err) from err
        finally:
            conn.close()

    def _explain(self, err: sqlite3.Error) -> KdvizError:
        """The one true sentence for a store that failed with err (see connect)."""
        return explain_store_error(self.path, err, BUSY_TIMEOUT_S, self._integrity_ok_fresh)

    def _integrity_ok_fresh(self) -> bool:
        """PRAGMA integrity_check on a new connection; False when it fails or cannot run."""
        try:
            conn = self._open()
            try:
                return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            finally:
                conn.close()
        except sqlite3.Error:
            return False

    def _ensure_schema(self) -> None:
        key = str(self.path.resolve())
        with _init_lock:
            if key in _initialised and self.path.exists():
                return
            try:
                conn = self._open()
            except sqlite3.Error as err:
                raise self._explain(err) from err
            try:
                # read first: a store already set up needs no write lock, so a busy one still opens
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if version != SCHEMA_VERSION or mode != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(_SCHEMA)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except sqlite3.DatabaseError as err:
                raise self._explain(err) from err
            finally:
                conn.close()
            _initialised.add(key)

    def integrity_ok(self) -> bool:
        with self.connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- settings

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.connect(write=True) as conn:
            conn.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, str(value)),
            )

    # -- runs

    def create_run(
        self,
        config: dict[str, Any],
        *,
        run_id: str | None = None,
        status: str = "queued",
        name: str = "",
        role: str = "student",
        source: str = "app",
        group_id: str = "",
        parent_id: str = "",
        device: str = "",
        max_running: int = 1,
        pid: int | None = None,
        checkpoint: str = "",
    ) -> Run:
        """Insert a run and return it; ``status`` is "queued" (app) or "running" (CLI)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        run_id = run_id or new_run_id()
        now = time.time()
        with self.connect(write=True) as conn:
            conn.execute(
                "INSERT INTO runs(id, kind, name, role, source, group_id, parent_id, config, status, "
                "pid, pid_start, host, device, max_running, checkpoint, created, started, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    config.get("kind", "train"),
                    name,
                    role,
                    source,
                    group_id or run_id,
                    parent_id,
                    json.dumps(config),
                    status,
                    pid,
                    process_start_token(pid) if pid else "",
                    socket.gethostname(),
                    device,
                    max(1, int(max_running)),
                    checkpoint,
                    now,
                    now if status == "running" else None,
                    now,
                ),
            )
        return self.get(run_id)

    def get(self, run_id: str) -> Run:
        """The run ``run_id``; a KdvizError if there is none."""
        run = self.find(run_id)
        if run is None:
            raise KdvizError(f"There is no run {run_id!r}; `kdviz runs` lists the recorded ones.")
        return run

    def find(self, run_id: str) -> Run | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        try:
            return _row_to_run(row)
        except BadRow as err:
            raise _bad_row_error(run_id) from err

    def list_runs(
        self,
        *,
        status: Iterable[str] | None = None,
        group_id: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally filtered. Rows that cannot be decoded are left out and
        their ids kept in ``self.skipped``."""
        where, args = [], []
        if status is not None:
            status = list(status)
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += status
        if group_id is not None:
            where.append("group_id = ?")
            args.append(group_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        runs, self.skipped = [], []
        with self.connect() as conn:
            for row in conn.execute(sql, args):
                try:
                    runs.append(_row_to_run(row))
                except BadRow:
                    self.skipped.append(row["id"])
        return runs

    def version(self) -> tuple[float, int]:
        """(latest finish time, number of runs): changes when a run finishes or is deleted."""
        with self.connect() as conn:
            row = conn.execute("SELECT MAX(finished), COUNT(*) FROM runs").fetchone()
        return (row[0] or 0.0, row[1])

    def group(self, group_id: str) -> list[Run]:
        """The runs of a group in start order (the student first, then its baseline)."""
        return sorted(self.list_runs(group_id=group_id), key=lambda r: r.seq)

    def update(self, run_id: str, **values: Any) -> None:
        """Set columns of a run (JSON columns take dicts)."""
        bad = set(values) - set(_RUN_COLUMNS)
        if bad:
            raise ValueError(f"unknown run columns {sorted(bad)}")
        for key in ("config", "metrics"):
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key], default=str)
        values["updated"] = time.time()
        sets = ", ".join(f"{key} = ?" for key in values)
        with self.connect(write=True) as conn:
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*values.values(), run_id])

    def set_process(self, run_id: str, pid: int) -> None:
        """Record the OS process that carries a run (pid and its start time)."""
        self.update(run_id, pid=pid, pid_start=process_start_token(pid), host=socket.gethostname())

    def finish(
        self,
        run_id: str,
        status: str,
        message: str = "",
        metrics: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """Move an active run to a final status; False (and no change) if it already finished."""
        if status not in FINISHED:
            raise ValueError(f"{status!r} is not a final status")
        sets = {"status": status, "message": message, "finished": time.time(), **values}
        if metrics is not None:
            sets["metrics"] = json.dumps(metrics, default=str)
        sets["updated"] = sets["finished"]
        if status != "running":
            sets["eta"] = None
        cols = ", ".join(f"{key} = ?" for key in sets)
        with self.connect(write=True) as conn:
            cur = conn.execute(
                f"UPDATE runs SET {cols} WHERE id = ? AND status IN ('queued', 'running')",
                [*sets.values(), run_id],
            )
            return cur.rowcount == 1

    # -- the queue

    def max_running(self, default: int = 1) -> int:
        """How many runs may train at once: $KDVIZ_MAX_RUNS, else the stored setting, else default."""
        for raw in (os.environ.get("KDVIZ_MAX_RUNS"), self.get_setting("max_running")):
            try:
                if raw is not None and int(raw) >= 1:
                    return int(raw)
            except ValueError:
                pass
        return max(1, default)

    def claim_slot(self, run_id: str) -> bool:
        """Atomically move a queued run to running if a slot is free and no older run waits.

        Strictly first come, first served: a run starts when no older run waits and fewer than its
        ``max_running`` runs are running. Returns True when the run holds a slot.
        """
        with self.connect(write=True) as conn:
            row = conn.execute(
                "SELECT seq, status, max_running FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None or row["status"] != "queued":
                return bool(row) and row["status"] == "running"
            running = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()
            ahead = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND seq < ?", (row["seq"],)
            ).fetchone()
            if ahead[0] or running[0] >= row["max_running"]:
                return False
            now = time.time()
            conn.execute(
                "UPDATE runs SET status = 'running', started = ?, updated = ? WHERE id = ?",
                (now, now, run_id),
            )
            return True

    def queue_position(self, run_id: str) -> tuple[int, int]:
        """(place in the queue counting from 1, runs running now) for a queued run; (0, n) otherwise."""
        with self.connect() as conn:
            row = conn.execute("SELECT seq, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            running = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[
                0
            ]
            if row is None or row["status"] != "queued":
                return 0, running
            ahead = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND seq < ?", (row["seq"],)
            ).fetchone()[0]
        return ahead + 1, running

    # -- cancel

    def request_cancel(self, run_id: str) -> None:
        """Ask a run to stop; its worker polls this flag between steps."""
        with self.connect(write=True) as conn:
            conn.execute(
                "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, ?), updated = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (time.time(), time.time(), run_id),
            )

    def cancel_requested(self, run_id: str) -> bool:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        return bool(row and row[0] is not None)

    # -- recovery

    def recover(self) -> list[str]:
        """Mark active runs of this machine whose process is gone as interrupted; returns their ids.

        A read-only store is left as it is (it cannot be written; its next writable opening does it).
        """
        if self.read_only:
            return []
        host = socket.gethostname()
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id, status, pid, pid_start, host, created FROM runs "
                "WHERE status IN ('queued', 'running')"
            ).fetchall()
        gone = []
        now = time.time()
        for row in rows:
            if row["host"] and row["host"] != host:
                continue  # another machine's process: not ours to judge
            try:
                if row["pid"]:
                    dead = not process_alive(int(row["pid"]), str(row["pid_start"] or ""))
                else:  # the launcher died before it recorded the worker
                    dead = now - float(row["created"]) > QUEUED_WITHOUT_PROCESS_S
            except (TypeError, ValueError, OverflowError):  # a hand-edited row: no process to find
                dead = True
            if dead:
                gone.append(row)
        ids = []
        for row in gone:
            try:
                run = self.find(row["id"])
            except KdvizError:  # a row with damaged JSON: still marked, without the note
                run = None
            was = "training" if row["status"] == "running" else "waiting in the queue"
            note = ""
            stem = Path(run.checkpoint) if run is not None and run.checkpoint else None
            # with_name, not with_suffix: a stem such as "...-T2.5-s0" has a dot in its name
            if stem is not None and stem.with_name(stem.name + ".safetensors").exists():
                note = " The checkpoint of its last finished epoch is kept."
            message = (
                f"The run's process (pid {row['pid']}) stopped while {was} (killed or the machine "
                f"restarted); start it again.{note}"
            )
            if self.finish(row["id"], "interrupted", message):
                ids.append(row["id"])
        return ids

    # -- metrics

    def log_metrics(
        self, run_id: str, rows: Iterable[tuple[int, float, str, float]], **progress: Any
    ) -> int:
        """Append (step, epoch, name, value) rows and set progress columns, in one transaction."""
        rows = [(run_id, int(s), float(e), str(n), _finite_or_none(v)) for s, e, n, v in rows]
        bad = set(progress) - {"step", "total_steps", "epoch", "eta"}
        if bad:
            raise ValueError(f"unknown progress columns {sorted(bad)}")
        if not rows and not progress:
            return 0
        with self.connect(write=True) as conn:
            if rows:
                conn.executemany(
                    "INSERT INTO metrics(run_id, step, epoch, name, value) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            if progress:
                progress["updated"] = time.time()
                sets = ", ".join(f"{key} = ?" for key in progress)
                conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*progress.values(), run_id])
        return len(rows)

    def metrics(
        self, run_ids: str | Iterable[str], names: Iterable[str] | None = None, after_id: int = 0
    ) -> list[dict[str, Any]]:
        """Metric rows {"id", "run_id", "step", "epoch", "name", "value"} in logging order."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if not ids:
            return []
        sql = (
            "SELECT id, run_id, step, epoch, name, value FROM metrics "
            f"WHERE run_id IN ({','.join('?' * len(ids))}) AND id > ?"
        )
        args: list[Any] = [*ids, after_id]
        if names is not None:
            names = list(names)
            sql += f" AND name IN ({','.join('?' * len(names))})"
            args += names
        with self.connect() as conn:
            return [dict(row) for row in conn.execute(sql + " ORDER BY id", args)]

    def metric_names(self, run_ids: Iterable[str]) -> list[str]:
        ids = list(run_ids)
        if not ids:
            return []
        with self.connect() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT name FROM metrics WHERE run_id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
        return sorted(r[0] for r in rows)

    # -- artifacts

    def add_artifact(self, run_id: str, kind: str, path: str | Path) -> None:
        with self.connect(write=True) as conn:
            conn.execute(
                "INSERT INTO artifacts(run_id, kind, path, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(run_id, kind) DO UPDATE SET path = excluded.path, "
                "created = excluded.created",
                (run_id, kind, str(path), time.time()),
            )

    def artifacts(self, run_id: str) -> dict[str, Path]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT kind, path FROM artifacts WHERE run_id = ?", (run_id,)
            ).fetchall()
        return {row["kind"]: Path(row["path"]) for row in rows}

    # -- delete

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run, its metrics, and its folder under runs_dir()."""
        with self.connect() as conn:  # the status alone: a row with damaged JSON can be deleted
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KdvizError(f"There is no run {run_id!r}; `kdviz runs` lists the recorded ones.")
        if row["status"] in ACTIVE:
            raise KdvizError(
                f"Run {run_id} is still {row['status']}; cancel it before deleting it."
            )
        with self.connect(write=True) as conn:
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM artifacts WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        folder = run_folder(run_id)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


class BadRow(ValueError):
    """A runs row whose config is not a JSON object, or whose status or numbers are not what
    the schema says (edited or damaged by hand)."""


def _row_to_run(row: sqlite3.Row) -> Run:
    """The Run of a row; BadRow when its config is not a JSON object (its metrics then: {})."""
    data = {key: row[key] for key in row.keys() if key in _RUN_COLUMNS}  # noqa: SIM118 (Row iterates values)
    try:
        data["config"] = json.loads(data["config"] or "{}")
    except (TypeError, ValueError, RecursionError) as err:
        raise BadRow(data.get("id", "?")) from err
    if not isinstance(data["config"], dict) or not _columns_typed(data):
        raise BadRow(data.get("id", "?"))
    try:
        metrics = json.loads(data["metrics"] or "{}")
    except (TypeError, ValueError, RecursionError):
        metrics = {}  # only shown, never used to run anything: an empty table is honest
    data["metrics"] = metrics if isinstance(metrics, dict) else {}
    return Run(**data)


_NUMBER_COLUMNS = {"step", "total_steps", "max_running", "seq", "epoch", "created"}
_OPTIONAL_NUMBER_COLUMNS = {"eta", "started", "finished", "updated", "cancel_requested", "pid"}


def _columns_typed(data: dict[str, Any]) -> bool:
    """True when a row's status and number columns hold what the schema says (SQLite does not
    enforce column types, so a hand-edited row may hold text where a number belongs)."""
    if data.get("status") not in STATUSES:
        return False
    for key, value in data.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in _NUMBER_COLUMNS and not number:
            return False
        if key in _OPTIONAL_NUMBER_COLUMNS and value is not None and not number:
            return False
    return True


def _bad_row_error(run_id: str) -> KdvizError:
    return KdvizError(
        f"The stored record of run {run_id} is not valid (its settings are not JSON, or a "
        "column holds the wrong kind of value: the row was edited or damaged); "
        f"kdviz skips it, and `kdviz runs --delete {run_id}` removes it."
    )


def open_store(path: str | Path | None = None) -> RunStore:
    """The run store in KDVIZ_HOME, opened (schema created, dead runs marked interrupted)."""
    return RunStore(path)
