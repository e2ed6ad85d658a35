"""The Runs table: readable names, "hard labels" for baselines, and the columns it leads with.

Runs are rows written straight into the store (no worker), so each test takes about a second.
"""

from __future__ import annotations

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import jobs
from kdviz.paths import REPO_ROOT, check_name
from kdviz.runs import RunStore
from kdviz.ui import runs_page

RUNS_PAGE = "kdviz/ui/runs_page.py"


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_resource.clear()
    st.cache_data.clear()
    yield


def record(store: RunStore, cfg, role: str, accuracy: float, agreement: float) -> str:
    """A finished app run of ``cfg`` named as start_distill names it."""
    run = store.create_run(
        cfg.to_dict(), name=jobs._run_name(cfg, "x"), role=role, source="app", pid=None
    )
    store.claim_slot(run.id)
    store.finish(run.id, "done", "ok", metrics={"accuracy": accuracy, "agreement": agreement})
    return run.id


def test_app_runs_get_readable_names_that_are_valid_checkpoint_names():
    cfg = jobs.default_config()
    assert jobs._run_name(cfg, "20250101-000000-abcdef") == "KD T=4 α=0.9 · mlp-800-800"
    base = jobs.baseline_config(cfg)
    assert jobs._run_name(base, "x", baseline=True) == "hard labels · mlp-800-800"
    assert jobs.method_label({**cfg.to_dict(), "method": "dkd", "beta": 8.0}) == (
        "DKD T=4 α=0.9 β=8"
    )
    assert jobs.method_label({"kind": "train"}) == "hard labels"
    check_name(jobs._run_name(cfg, "x"), "checkpoint name")  # the card's name must pass


def test_a_baseline_reads_hard_labels_without_t_or_alpha():
    store = RunStore()
    cfg = jobs.default_config()
    record(store, cfg, "student", 0.97, 0.98)
    record(store, jobs.baseline_config(cfg), "baseline", 0.95, 0.96)
    table = runs_page.runs_table(store.list_runs()).set_index("role")
    assert table.loc["baseline", "method"] == "hard labels"
    assert table.loc["baseline", "name"] == "hard labels · mlp-800-800"
    assert list(table.loc["baseline", ["T", "alpha"]]) == ["", ""]
    assert table.loc["student", "method"] == "KD"
    assert (table.loc["student", "T"], table.loc["student", "alpha"]) == ("4", "0.9")


def test_the_table_leads_with_results_then_only_the_settings_that_differ():
    store = RunStore()
    cfg = jobs.default_config()
    record(store, cfg, "student", 0.97, 0.98)
    record(store, jobs.baseline_config(cfg), "baseline", 0.95, 0.96)
    record(store, jobs.default_config(temperature=8.0), "student", 0.96, 0.97)
    table = runs_page.runs_table(store.list_runs())
    columns = runs_page.shown_columns(table)
    assert columns[:4] == ["name", "status", "accuracy", "agreement"]
    settings = columns[4 : columns.index("created")]
    assert settings == ["method", "T", "alpha"]  # arch, teacher, epochs... are shared

    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=30)
    at.run()
    at.switch_page(RUNS_PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    frame = at.dataframe[0]
    assert list(frame.proto.column_order) == columns
    config = {c.get("name", k): c for k, c in _column_config(frame).items()}
    assert config["accuracy"]["type_config"]["format"] == "percent"
    shown = frame.value.set_index("name")
    assert shown.loc["hard labels · mlp-800-800", "accuracy"] == pytest.approx(0.95)


def _column_config(frame) -> dict:
    raw = frame.proto.columns
    return json.loads(raw) if raw else {}


# ---------------------------------------------------------------------------- the Experiments lab


def _experiment_row(store: RunStore, name: str, size: str, status: str, seconds: float = 0.0):
    import os
    import time

    run = store.create_run(
        {"kind": "experiment", "experiment": name, "size": size, "dataset": "mnist5k"},
        status="running", pid=os.getpid(),
    )  # fmt: skip
    if status != "running":
        store.finish(run.id, status, "ok")
        now = time.time()
        store.update(run.id, started=now - seconds, finished=now)
    return store.get(run.id)


def test_the_time_model_grows_with_what_an_experiment_launches():
    from kdviz import experiments as ex
    from kdviz.ui import experiments_page as page

    for name in ex.list_experiments():
        spec = ex.get_experiment(name)
        tiny, full = (page.model_seconds(spec.make_settings(size=z)) for z in ex.SIZES)
        assert 0 < tiny[0] < full[0] and tiny[1] <= full[1], name
    spec = ex.get_experiment("temperature-sweep")
    one, two = (page.model_seconds(spec.make_settings(size="tiny", seeds=n)) for n in (1, 2))
    assert two[0] > one[0] and two[1] > one[1]


def test_the_estimate_is_measured_once_the_experiment_ran_here():
    from kdviz import experiments as ex
    from kdviz.ui import experiments_page as page

    store = RunStore()
    spec = ex.get_experiment("omitted-class")
    seconds, text = page.estimate_text(store, spec, "tiny")
    assert "simple model" in text and "on this machine" in text
    _experiment_row(store, "omitted-class", "tiny", "done", seconds=100.0)
    _experiment_row(store, "omitted-class", "tiny", "done", seconds=200.0)
    _experiment_row(store, "omitted-class", "full", "done", seconds=9000.0)  # another size
    seconds, text = page.estimate_text(store, spec, "tiny")
    assert seconds == pytest.approx(150.0, abs=1.0)
    assert text == "about 2 min on this machine (the mean of 2 earlier runs here)"


def test_size_defaults_to_full_only_when_it_is_quick_and_the_picker_follows_the_status():
    store = RunStore()
    at = AppTest.from_file(str(REPO_ROOT / "kdviz/ui/experiments_page.py"), default_timeout=30)
    at.run()
    name = at.selectbox(key="exp_name").value
    assert at.radio(key=f"exp_{name}_size").value == "tiny"  # full: many minutes here
    assert any("on this machine" in c.value for c in at.caption)

    _experiment_row(store, name, "full", "done", seconds=60.0)  # measured: a minute
    run = _experiment_row(store, name, "tiny", "running")
    again = AppTest.from_file(str(REPO_ROOT / "kdviz/ui/experiments_page.py"), default_timeout=30)
    again.query_params["experiment"] = run.id
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    assert again.radio(key=f"exp_{name}_size").value == "full"
    assert "running" in again.selectbox(key="exp_history").format_func(run.id)
    store.finish(run.id, "done", "ok")
    again.run()
    assert " done " in again.selectbox(key="exp_history").format_func(run.id)
