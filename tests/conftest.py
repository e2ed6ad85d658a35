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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared CPU: one torch thread is faster than two fighting over it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A tiny digits teacher and student (tests/e2e/kdviz_tiny.py), trained once per session."""
    from e2e.kdviz_tiny import make_tiny_checkpoints

    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    make_tiny_checkpoints(folder)
    return folder


@pytest.fixture
def home(kdviz_home, tmp_path, monkeypatch, tiny_checkpoints):
    """KDVIZ_HOME with the tiny checkpoints; no shipped ones; empty Streamlit caches (AppTests)."""
    import streamlit as st
    import torch
    from e2e.kdviz_tiny import copy_checkpoints

    from kdviz import paths

    empty = tmp_path / "no_pretrained"
    empty.mkdir()
    monkeypatch.setattr(paths, "PRETRAINED_DIR", empty)
    copy_checkpoints(tiny_checkpoints, paths.checkpoints_dir())
    st.cache_data.clear()
    st.cache_resource.clear()
    threads = torch.get_num_threads()
    yield kdviz_home
    st.cache_data.clear()
    st.cache_resource.clear()
    torch.set_num_threads(threads)  # the UI runs torch on one thread; give the rest back
