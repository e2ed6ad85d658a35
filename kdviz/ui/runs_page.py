"""Page "Runs": the history of every run (app and command line), curves of chosen runs overlaid,
checkpoint downloads (safetensors + card) and deletion."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from kdviz import jobs
from kdviz.errors import KdvizError
from kdviz.runs import STATUSES, Run, RunStore
from kdviz.ui.distill import curve_figure, metrics_frame, pickers_changed, store

SORTS = {
    "newest first": ("created", False),
    "oldest first": ("created", True),
    "best accuracy first": ("accuracy", False),
    "longest first": ("seconds", False),
}


LEAD = ["name", "status", "accuracy", "agreement"]  # always shown first
ALWAYS = ["method"]  # the one setting shown even when every run shares it
SETTINGS = [  # shown after LEAD only where the runs on screen differ
    "method", "T", "alpha", "arch", "teacher", "dataset", "epochs", "seed", "transfer",
    "omitted", "augment",
]  # fmt: skip
TAIL = ["created", "seconds", "id", "role", "source", "device", "message"]


def _method(run: Run) -> str:
    if run.kind == "experiment":
        return f"experiment: {run.config.get('experiment', '')}"
    return jobs.method_label(run.config).split(" T=")[0].split(" α=")[0]


def _distilled(run: Run) -> bool:
    return run.kind == "distill" and _method(run) != "hard labels"


def _number(value) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) else ""


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: what the history table shows (and what the filters and sorts work on).

    A baseline (a distillation config with alpha 0) reads "hard labels", with no T or alpha."""
    rows = []
    for run in runs:
        cfg = run.config
        end = run.finished or (time.time() if run.active else run.updated) or run.created
        soft = _distilled(run)
        omitted = cfg.get("omit_classes") or ()
        rows.append(
            {
                "id": run.id,
                "status": run.status,
                "role": run.role,
                "source": run.source,
                "name": run.name or jobs.run_title(cfg),
                "teacher": cfg.get("teacher", "") if run.kind == "distill" else "",
                "method": _method(run),
                # text, blank for hard labels (a number column would print "None")
                "T": _number(cfg.get("temperature")) if soft and cfg.get("method") != "mse" else "",
                "alpha": _number(cfg.get("alpha")) if soft else "",
                "arch": cfg.get("arch", ""),
                "dataset": cfg.get("dataset", ""),
                "epochs": cfg.get("epochs"),
                "seed": cfg.get("seed"),
                "transfer": cfg.get("transfer_fraction"),
                "omitted": ", ".join(str(c) for c in omitted),
                "augment": cfg.get("augment"),
                "accuracy": run.metrics.get("accuracy"),
                "agreement": run.metrics.get("agreement"),
                "device": run.device,
                "created": pd.Timestamp(run.created, unit="s"),
                "seconds": round(end - (run.started or run.created), 1) if run.started else None,
                "message": run.message,
            }
        )
    return pd.DataFrame(rows)


def shown_columns(table: pd.DataFrame) -> list[str]:
    """Name, status, accuracy, agreement, then the settings that differ between these rows
    (and the method), then when / how long / which run."""
    varying = [
        c
        for c in SETTINGS
        if c in table and (c in ALWAYS or table[c].astype(str).nunique(dropna=False) > 1)
    ]
    return LEAD + varying + TAIL


def filter_sort(table: pd.DataFrame, statuses: list[str], text: str, sort: str) -> pd.DataFrame:
    """Rows with a chosen status whose name, id, teacher or method contains ``text``, sorted."""
    if table.empty:
        return table
    keep = table["status"].isin(statuses) if statuses else pd.Series(True, index=table.index)
    if text:
        hay = (
            table[["id", "name", "teacher", "method", "arch", "dataset"]]
            .astype(str)
            .agg(" ".join, axis=1)
        )
        keep &= hay.str.contains(text, case=False, regex=False)
    column, ascending = SORTS[sort]
    return table[keep].sort_values(column, ascending=ascending, na_position="last")


def checkpoint_zip(run: Run) -> bytes | None:
    """The run's checkpoint pair (NAME.safetensors + NAME.json) zipped; None if there is none."""
    if not run.checkpoint:
        return None
    stem = Path(run.checkpoint)
    files = [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]
    if not all(f.is_file() for f in files):
        return None
    buf = io.BytesIO()
    name = run.name or stem.name
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"{name}{f.suffix}")
    return buf.getvalue()


def _overlay(rs: RunStore, runs: list[Run]) -> None:
    by_id = {run.id: run for run in runs}
    if "runs_overlay" in st.session_state:  # runs may have been deleted or filtered out
        st.session_state["runs_overlay"] = [
            i for i in st.session_state["runs_overlay"] if i in by_id
        ]
    chosen = st.multiselect(
        "Overlay the curves of",
        list(by_id),
        default=([i for i, r in by_id.items() if r.status == "done"] or list(by_id))[:2],
        format_func=lambda i: f"{i} · {by_id[i].name} ({by_id[i].status})",
        key="runs_overlay",
    )
    if not chosen:
        return
    picked = [by_id[i] for i in chosen]
    names = rs.metric_names(chosen)
    if not names:
        st.info("These runs have no recorded metrics yet.")
        return
    default = [n for n in names if n.endswith("/accuracy")][:1] or names[:1]
    metrics = st.multiselect("Metrics", names, default=default, key="runs_metrics")
    frame = metrics_frame(rs, picked, metrics)
    labels = {run.id: f"{run.name or run.id} [{run.role}]" for run in picked}
    for name in metrics:
        fig = curve_figure(frame, [name], title=name, y_title=name.split("/")[-1], label_of=labels)
        st.plotly_chart(fig, key=f"runs_curve_{name}", config={"displayModeBar": False})


def _manage(rs: RunStore, runs: list[Run]) -> None:
    by_id = {run.id: run for run in runs}
    if st.session_state.get("runs_manage") not in by_id:
        st.session_state.pop("runs_manage", None)  # back to the first run shown
    run_id = st.selectbox(
        "Run",
        list(by_id),
        format_func=lambda i: f"{i} · {by_id[i].name} ({by_id[i].status})",
        key="runs_manage",
    )
    if run_id is None:
        return
    run = by_id[run_id]
    st.write(f"**{run.name or run.id}**: {run.status}. {run.message}")
    c1, c2, c3 = st.columns(3)
    data = checkpoint_zip(run)
    if data is not None:
        c1.download_button(
            "Download checkpoint (safetensors + card)",
            data,
            file_name=f"{run.name or run.id}.zip",
            mime="application/zip",
            key="runs_download",
        )
    else:
        c1.caption("No checkpoint (the run finished no epoch).")
    if run.active:
        if c2.button("Cancel run", key="runs_cancel"):
            jobs.cancel(run.id, rs)
            st.rerun()
    else:
        sure = c3.checkbox("Yes, delete it and its files", key="runs_delete_sure")
        if c2.button("Delete run", key="runs_delete", disabled=not sure):
            try:
                rs.delete_run(run.id)
            except KdvizError as err:
                st.error(str(err))
            else:
                st.session_state.pop("runs_delete_sure", None)
                st.toast(f"Deleted run {run.id}.")
                pickers_changed()  # its student leaves the pickers
                st.rerun()
    with st.expander("Config and final metrics"):
        st.json({"config": run.config, "metrics": run.metrics, "device": run.device})
    log = rs.artifacts(run.id).get("log")
    if log is not None and log.is_file():
        with st.expander("Worker log"):
            st.code(log.read_text(errors="replace")[-5000:] or "(empty)")


def render() -> None:
    """The "Runs" page."""
    st.title("Runs")
    rs = store()
    runs = rs.list_runs()
    if not runs:
        st.info("No runs yet: start one on the Distill page or with `kdviz distill`.")
        return
    c1, c2, c3, c4 = st.columns([2, 2, 1.6, 1])  # "best accuracy first" needs ~180 px
    statuses = c1.multiselect("Status", list(STATUSES), key="runs_status")
    text = c2.text_input("Search", key="runs_search", placeholder="name, id, teacher, method")
    sort = c3.selectbox("Sort", list(SORTS), key="runs_sort")
    if "runs_max_running" not in st.session_state:
        st.session_state["runs_max_running"] = rs.max_running(jobs.default_max_running("cpu"))
    c4.number_input(
        "Runs at once",
        1,
        16,
        key="runs_max_running",
        on_change=lambda: rs.set_setting("max_running", st.session_state["runs_max_running"]),
        help="How many queued runs may train at the same time ($KDVIZ_MAX_RUNS overrides it).",
    )
    table = filter_sort(runs_table(runs), statuses, text, sort)
    st.dataframe(
        table,
        hide_index=True,
        key="runs_table",
        column_order=shown_columns(table),
        column_config={
            "name": st.column_config.TextColumn("name"),
            "status": st.column_config.TextColumn("status", width="small"),
            "accuracy": st.column_config.NumberColumn(format="percent", width="small"),
            "agreement": st.column_config.NumberColumn(format="percent", width="small"),
            "alpha": st.column_config.TextColumn("α", width="small"),
            "T": st.column_config.TextColumn("T", width="small"),
            "transfer": st.column_config.NumberColumn(
                format="percent", help="fraction of the training split"
            ),
            "created": st.column_config.DatetimeColumn(format="MM-DD HH:mm"),
            "seconds": st.column_config.NumberColumn("s", width="small"),
        },
    )
    shown = [run for run in runs if run.id in set(table["id"])] if not table.empty else []
    st.subheader("Curves")
    _overlay(rs, shown)
    st.subheader("Manage")
    _manage(rs, shown)
    st.caption("Runs from `kdviz train` and `kdviz distill` are listed here too.")


if __name__ == "__main__":
    render()
