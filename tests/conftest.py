"""Shared fixtures: every test gets its own KDVIZ_HOME and never touches ~/.kdviz."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def kdviz_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("kdviz_home")
    monkeypatch.setenv("KDVIZ_HOME", str(home))
    return home
