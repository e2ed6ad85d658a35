"""Shared fixtures: every test gets its own KDVIZ_HOME and never touches ~/.kdviz."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest


@pytest.fixture(autouse=True)
def kdviz_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("kdviz_home")
    monkeypatch.setenv("KDVIZ_HOME", str(home))
    return home


@pytest.fixture
def no_stray_workers():
    """A failing test must not leave a run or an experiment training in the background.

    Modules that start background workers use it with ``pytestmark``."""
    yield
    from kdviz.runs import RunStore

    for run in RunStore(recover=False).list_runs(status=("queued", "running")):
        if run.pid and run.pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.pid, signal.SIGKILL)
