"""What went wrong with the run store's SQLite file, in one true sentence.

A store that is only busy, read-only or on a full disk must not be called damaged: that advice
throws a healthy history away. "Damaged" is said only after PRAGMA integrity_check fails.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from kdviz.errors import KdvizError
from kdviz.paths import storage_problem


def explain_store_error(
    path: Path, err: sqlite3.Error, busy_timeout_s: float, integrity_ok: Callable[[], bool]
) -> KdvizError:
    """The one true sentence for the run store at path that failed with err: busy, read-only,
    no space, a folder, not kdviz's, damaged (only when integrity_ok() is False), or else."""
    code = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    where = f"The run store {path}"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return KdvizError(
            f"{where} is busy: {lock_holder(path)} kept its write lock for all of the "
            f"{busy_timeout_s:g} s kdviz waited; wait for it to finish (or stop it) and try again."
        )
    problem = storage_problem(path.parent)
    if problem == "read-only" or code.startswith("SQLITE_READONLY"):
        return KdvizError(
            f"{where} is read-only (its folder cannot be written); kdviz can list its runs but "
            "not record new ones, so set KDVIZ_HOME to a writable folder to train."
        )
    if problem == "full" or code == "SQLITE_FULL":
        return KdvizError(
            f"{where} cannot be used: no space is left on its disk; free some space and try again."
        )
    if path.is_dir():
        return KdvizError(
            f"{where} is a folder, not a database file; move it aside and kdviz starts a new store."
        )
    if text.startswith(("no such table", "no such column", "table runs has no column")):
        return KdvizError(
            f"{where} is not a kdviz run store of this version ({text}); move it aside and "
            "kdviz starts a new one."
        )
    corrupt = code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text
    if corrupt and not integrity_ok():
        return KdvizError(
            f"{where} is damaged (its integrity check fails); move it aside and kdviz "
            "starts a new one."
        )
    return KdvizError(
        f"{where} could not be used ({text}); try again, and check the disk if it persists."
    )


def lock_holder(db: Path) -> str:
    """Who holds the write lock of the SQLite database db: "process 123 (kdviz worker ...)".

    Reads /proc/locks (Linux) for a POSIX write lock on the WAL index (db-shm, byte 120 is WAL's
    writer lock) or on the database file itself; "another kdviz process" where that is unknown.
    """
    targets = set()
    for file in (db.with_name(db.name + "-shm"), db):
        with contextlib.suppress(OSError):
            st = os.stat(file)
            targets.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino, file == db))
    pids = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) < 8 or fields[1] != "POSIX" or fields[3] != "WRITE":
                continue
            try:
                major, minor, inode = fields[5].split(":")
                key = (int(major, 16), int(minor, 16), int(inode))
                pid = int(fields[4])
            except ValueError:  # a line in a format this reader does not know
                continue
            for t_major, t_minor, t_inode, is_db in targets:
                if key == (t_major, t_minor, t_inode) and (is_db or fields[6] == "120"):
                    pids.append(pid)
    for pid in pids:
        if pid == os.getpid():
            return "another connection of this process"
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ")
            cmd = " ".join(raw.decode(errors="replace").split())  # one line, however it was typed
        except OSError:
            cmd = ""
        return f"process {pid}" + (f" ({cmd[:80]})" if cmd else "")
    return "another kdviz process"
