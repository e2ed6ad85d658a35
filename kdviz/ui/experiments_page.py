"""Page "Experiments lab": pick a classic dark-knowledge experiment, set it up, run it as one
background run, and read our numbers beside the published ones, a table, a chart and two
sentences on what to notice.

The experiment's run id goes into the URL (``?experiment=ID``), so a reload or a second tab
re-attaches to it. The live panel is an ``st.fragment`` that reruns every ``POLL_S`` seconds while
the experiment runs; the experiment itself is a separate OS process (``kdviz.experiments``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pandas as pd
import streamlit as st

from kdviz import data, jobs
from kdviz import experiments as ex
from kdviz.errors import KdvizError
from kdviz.experiments import estimate
from kdviz.precision import PRECISIONS
from kdviz.runs import Run, RunStore

POLL_S = 1.0  # live panel refresh while an experiment runs
URL_KEY = "experiment"  # ?experiment=RUN_ID
RATE_WORDS = ("accuracy", "agreement", "error", "share", "prior", "gain", "fraction")
FULL_BY_DEFAULT_S = 300.0  # the size preselected is "full" only when it should take under this
CHOICES = {  # settings shown as a select box: field -> options
    "size": ex.SIZES,
    "eval_split": ("test", "val"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "precision": PRECISIONS,
}


# ---------------------------------------------------------------------------- pure helpers


def store() -> RunStore:
    """The run store, with finished workers reaped and dead runs marked interrupted."""
    ex.reap()
    return jobs.refresh(RunStore(recover=False))


def widget_key(name: str, size: str, field: str) -> str:
    """One widget per (experiment, size, setting): a new size shows that size's presets."""
    return f"exp_{name}_{size}_{field}"


def shown_value(value: Any) -> Any:
    """A setting as its widget holds it (tuples as "1, 2, 4")."""
    if isinstance(value, tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def rate_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if any(w in str(c) for w in RATE_WORDS)]


def experiment_label(run: Run) -> str:
    name = run.config.get("experiment", "?")
    title = ex.get_experiment(name).title if name in ex.list_experiments() else name
    return f"{title} · {run.config.get('dataset', '?')} · {run.status} · {run.id}"


def progress_text(run: Run, rs: RunStore) -> str:
    if run.status == "queued":
        place, running = rs.queue_position(run.id)
        return f"Waiting, place {place} in the queue ({running} running)"
    if run.total_steps:
        return f"{run.message or 'starting'} ({run.step} of {run.total_steps} runs done)"
    return "Starting (loading data and the teacher)"


def model_seconds(
    settings: ex.Settings,
    rs: RunStore | None = None,
    name: str = "",
    costs: dict[str, float] | None = None,
) -> tuple[float, int]:
    """(seconds, trainings) of an experiment not yet run here: its trainings counted from its
    settings (kdviz.experiments.estimate), each at the speed of this store's earlier runs of that
    architecture (``costs``, read from ``rs`` when not given), else at speeds measured on a 2-core
    CPU."""
    if costs is None and rs is not None:
        costs = store_costs(rs)
    name = name or next(  # the experiment whose settings these are
        n for n in ex.list_experiments() if ex.get_experiment(n).settings is type(settings)
    )
    return estimate.estimate_seconds(name, settings, costs)


def store_costs(rs: RunStore) -> dict[str, float]:
    """ms per image and epoch of each architecture, from this store's finished trainings."""
    return estimate.measured_costs(
        run
        for kind in ("train", "distill")
        for run in rs.list_runs(status=("done",), kind=kind, limit=300)
    )


IGNORED = ("device", "precision", "seed", "seeds")  # settings that leave the time about equal


def measured_seconds(
    rs: RunStore, name: str, size: str, settings: ex.Settings | None = None
) -> list[float]:
    """How long earlier finished runs of this experiment at this size took here, scaled to
    ``settings``' number of seeds; a run whose recorded settings differ otherwise is left out."""
    wanted = settings.to_dict() if settings is not None else {}
    out = []
    for r in rs.list_runs(kind="experiment", limit=50):
        cfg = r.config
        recorded = cfg.get("settings") or {}
        if (
            r.status != "done" or not r.started or not r.finished
            or cfg.get("experiment") != name or (cfg.get("size") or recorded.get("size")) != size
        ):  # fmt: skip
            continue
        if (
            recorded
            and wanted
            and any(recorded.get(k) != v for k, v in wanted.items() if k not in IGNORED)
        ):
            continue
        seeds = recorded.get("seeds") if recorded else None
        scale = wanted["seeds"] / seeds if wanted and isinstance(seeds, int) and seeds else 1.0
        out.append((r.finished - r.started) * scale)
    return out


def estimate_text(
    rs: RunStore, spec: ex.Experiment, size: str, costs: dict[str, float] | None = None
) -> tuple[float, str]:
    """(seconds, "about 4 min on this machine (…)"): measured when it ran here before, else modelled."""
    settings = spec.make_settings(size=size)
    measured = measured_seconds(rs, spec.name, size, settings)
    if measured:
        seconds = sum(measured) / len(measured)
        how = f"the mean of {len(measured)} earlier run{'s' if len(measured) > 1 else ''} here"
    else:
        seconds, runs = model_seconds(settings, rs, spec.name, costs)
        seeds = f", {settings.seeds} seeds" if settings.seeds > 1 else ""
        how = (
            f"a simple model of its {runs} trainings{seeds} at measured speeds per architecture, "
            "not yet run here"
        )
    return seconds, f"about {_duration(seconds)} on this machine ({how})"


def edited_estimate_text(
    spec: ex.Experiment,
    size: str,
    values: dict[str, Any],
    defaults: ex.Settings,
    costs: dict[str, float],
) -> str | None:
    """What the form's settings should take, once they differ from the size's preset (the size's
    estimate above is for the preset); None while they match it or do not parse yet."""
    try:
        settings = spec.make_settings(size=size, **values)
    except (KdvizError, TypeError, ValueError):
        return None
    if settings == defaults:
        return None
    seconds, runs = model_seconds(settings, name=spec.name, costs=costs)
    seeds = f" x {settings.seeds} seeds" if settings.seeds > 1 else ""
    return (
        f"With these settings: about {_duration(seconds)} on this machine "
        f"({runs} trainings{seeds}, modelled)."
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 5400:
        return f"{round(seconds / 60):.0f} min"
    return f"{seconds / 3600:.1f} h"


def similarity_frames(result: ex.ExperimentResult) -> dict[float, pd.DataFrame]:
    """The label-smoothing experiment's similarity matrices, one K x K frame per smoothing."""
    long = result.extras.get("similarity")
    if long is None or long.empty:
        return {}
    out = {}
    for smoothing, part in long.groupby("smoothing", sort=False):
        matrix = part.pivot(index="true_class", columns="class", values="probability")
        order = list(dict.fromkeys(part["true_class"]))
        matrix = matrix.loc[order, order]
        matrix.index.name, matrix.columns.name = "true class", "class"
        out[float(smoothing)] = matrix
    return out


# ---------------------------------------------------------------------------- the form


def _field_widget(spec: ex.Experiment, size: str, field: dataclasses.Field, default: Any) -> Any:
    key = widget_key(spec.name, size, field.name)
    label = field.name.replace("_", " ")
    if key not in st.session_state:
        st.session_state[key] = shown_value(default)
    if field.name == "dataset":
        named = [s for s in data.list_datasets() if ":" not in s]
        if st.session_state[key] not in named:
            named.append(st.session_state[key])
        return st.selectbox(label, named, key=key)
    if field.name in CHOICES:
        options = list(CHOICES[field.name])
        if st.session_state[key] not in options:
            options.append(st.session_state[key])
        return st.selectbox(label, options, key=key)
    value = st.session_state[key]
    if isinstance(value, bool):
        return st.checkbox(label, key=key)
    if isinstance(value, int):
        return st.number_input(label, min_value=0, step=1, key=key)
    if isinstance(value, float):
        step = 10.0 ** math.floor(math.log10(value)) if value > 0 else 0.1
        return st.number_input(label, min_value=0.0, step=step, format="%g", key=key)
    hint = "comma-separated" if "tuple" in str(field.type) else None
    if field.name == "teacher":
        hint = "checkpoint name or path; empty = the dataset's shipped teacher"
    return st.text_input(label, key=key, help=hint)


def settings_form(spec: ex.Experiment, rs: RunStore) -> ex.Settings | None:
    """Draw the settings of ``spec``; returns them when Start was pressed (None otherwise)."""
    size_key = f"exp_{spec.name}_size"
    costs = store_costs(rs)  # read once for every estimate on the page
    estimates = {size: estimate_text(rs, spec, size, costs) for size in ex.SIZES}
    # set here, not by index: the Re-run button sets it too. Full when it is quick enough here.
    st.session_state.setdefault(
        size_key, "full" if estimates["full"][0] <= FULL_BY_DEFAULT_S else "tiny"
    )
    size = st.radio(
        "Size",
        ex.SIZES,
        horizontal=True,
        key=size_key,
        format_func=lambda z: f"{z} (~{_duration(estimates[z][0])})",
        help=f"tiny: to try it out ({ex.SMOKE_TEST}); full: the numbers of the README",
    )
    st.caption(f"{size.capitalize()}: {estimates[size][1]}.")
    if size == "tiny":
        st.caption(f"Note: {ex.SMOKE_TEST}. Use full for numbers worth comparing with a paper.")
    defaults = spec.make_settings(size=size)
    fields = [f for f in dataclasses.fields(spec.settings) if f.name != "size"]
    values: dict[str, Any] = {}
    cols = st.columns(4)
    for i, f in enumerate(fields):
        with cols[i % 4]:
            values[f.name] = _field_widget(spec, size, f, getattr(defaults, f.name))
    edited = edited_estimate_text(spec, size, values, defaults, costs)
    if edited:
        st.caption(edited)
    if not st.button("Start", type="primary", key=f"exp_{spec.name}_start"):
        return None
    try:
        return spec.make_settings(size=size, **values)
    except KdvizError as err:
        st.error(str(err))
        return None


def load_into_form(result: ex.ExperimentResult) -> None:
    """Button callback: put a stored result's settings into the form (before widgets exist)."""
    spec = ex.get_experiment(result.name)
    size = result.settings.get("size", "full")
    st.session_state["exp_name"] = spec.name
    st.session_state[f"exp_{spec.name}_size"] = size
    names = {f.name: f for f in dataclasses.fields(spec.settings)}
    for key, value in result.settings.items():
        if key in names and key != "size":
            value = tuple(value) if isinstance(value, list) else value
            st.session_state[widget_key(spec.name, size, key)] = shown_value(value)
    st.session_state["exp_form_open"] = True


# ---------------------------------------------------------------------------- the result


def show_result(result: ex.ExperimentResult, key: str) -> None:
    """Notice, our numbers beside the published ones, chart, table, downloads, runs used."""
    st.subheader(result.title)
    if result.settings.get("size") == "tiny":
        st.warning(f"**{ex.SMOKE_TEST[0].upper()}{ex.SMOKE_TEST[1:]}**: two epochs on a few images "
                   "check that the experiment runs; run it at full size to compare with the paper.")  # fmt: skip
    st.info(f"**What to notice.** {result.notice}")
    st.markdown("**Our numbers beside the published ones**")
    st.caption(
        f"{ex.seeds_text(result.settings)} Accuracies with their 95% interval (Wilson); gains over "
        "the hard-label baseline with Newcombe's paired interval (same images), 'within noise' "
        "when it contains 0. The verdict is read from the interval, not the point estimate: "
        "agrees when the whole interval fits the published claim, disagrees when none of it "
        "does, inconclusive otherwise."
    )
    st.dataframe(
        result.comparison,
        hide_index=True,
        key=f"{key}_comparison",
        column_config={"verdict": st.column_config.TextColumn("verdict", width="small")},
    )
    st.plotly_chart(ex.result_figure(result), key=f"{key}_chart", config={"displayModeBar": False})
    matrices = similarity_frames(result)
    if matrices:
        from kdviz import analysis, plots

        st.markdown(
            "**Class similarity of each teacher** (mean soft target per true class at "
            f"T = {result.settings.get('temperature', '?')}, diagonal left out)"
        )
        cols = st.columns(len(matrices))
        for col, (smoothing, matrix) in zip(cols, matrices.items(), strict=True):
            with col:
                fig = plots.matrix_heatmap(
                    analysis.off_diagonal(matrix),
                    title=f"label smoothing {smoothing:g}",
                    height=380,
                )
                st.plotly_chart(fig, key=f"{key}_sim_{smoothing:g}")
    table = result.table
    st.markdown("**Results**")
    st.dataframe(
        table,
        hide_index=True,
        key=f"{key}_table",
        column_config={
            c: st.column_config.NumberColumn(format="percent") for c in rate_columns(table)
        },
    )
    c1, c2, c3 = st.columns(3)
    stem = f"{result.name}-{result.experiment_run or 'result'}"
    c1.download_button(
        "Table (CSV)",
        result.table_csv(),
        file_name=f"{stem}.csv",
        mime="text/csv",
        key=f"{key}_csv",
    )
    c2.download_button(
        "Everything (JSON)",
        json.dumps(result.to_dict(), indent=1, default=str),
        file_name=f"{stem}.json",
        mime="application/json",
        key=f"{key}_json",
    )
    c3.button(
        "Re-run with other settings",
        key=f"{key}_load",
        on_click=load_into_form,
        args=(result,),
        help="Puts these settings into the form above.",
    )
    teacher = f"Teacher `{result.teacher}`. " if result.teacher else ""
    st.caption(
        f"{teacher}{len(result.run_ids)} runs in {result.seconds:.0f} s, each on the Runs page: "
        + ", ".join(f"`{i}`" for i in result.run_ids)
    )
    with st.expander("Settings"):
        st.json(result.settings)


# ---------------------------------------------------------------------------- live panel


def live_panel(run_id: str) -> None:
    """Progress and Cancel while the experiment runs; its result once it is done."""
    rs = store()
    run = rs.find(run_id)
    if run is None or run.kind != "experiment":
        st.warning(f"There is no experiment run {run_id!r}; it may have been deleted.")
        return
    children = [r for r in rs.group(run.id) if r.id != run.id]
    if st.session_state.get("exp_shown_status", run.status) != run.status:
        st.rerun()  # queued -> running -> done: the Results picker's label follows (full rerun)
    if run.active:
        st.progress(run.progress, text=progress_text(run, rs))
        for child in children:
            if child.active:
                left = jobs.eta_text(child.eta)
                text = f"{child.name}: step {child.step}/{child.total_steps or '?'}"
                st.progress(child.progress, text=f"{text} · {left}" if left else text)
        if st.button("Cancel", key="exp_cancel"):
            ex.cancel_experiment(run.id, rs)
            st.rerun()
        st.session_state["exp_active"] = run.id
        return
    if st.session_state.pop("exp_active", None) == run.id:
        st.rerun()  # it just finished: draw the result with the full page
    if run.status != "done":
        st.error(f"Experiment {run.id}: {run.status}. {run.message}")
        return
    try:
        result = ex.load_result(run.id)
    except KdvizError as err:
        st.error(str(err))
        return
    show_result(result, key=f"exp_{run.id}")


# ---------------------------------------------------------------------------- page


def render() -> None:
    """The "Experiments lab" page."""
    st.title("Experiments lab")
    st.caption(
        "One-click reproductions of what dark knowledge is and when it helps. Each experiment "
        "trains its models as background runs and shows our numbers beside the published ones."
    )
    rs = store()
    run_id = st.query_params.get(URL_KEY)
    current = rs.find(run_id) if run_id else None
    names = ex.list_experiments()
    if "exp_name" not in st.session_state:
        shown = current.config.get("experiment") if current is not None else None
        st.session_state["exp_name"] = shown if shown in names else names[0]
    name = st.selectbox(
        "Experiment",
        names,
        format_func=lambda n: ex.get_experiment(n).title,
        key="exp_name",
    )
    spec = ex.get_experiment(name)
    st.markdown(f"**{spec.question}** · {spec.paper}")
    open_form = st.session_state.pop("exp_form_open", False) or current is None
    with st.expander("Settings and Start", expanded=open_form):
        settings = settings_form(spec, rs)
    if settings is not None:
        try:
            run = ex.start_experiment(spec.name, settings, store=rs)
        except KdvizError as err:
            st.error(str(err))
        else:
            st.query_params[URL_KEY] = run.id
            st.rerun()

    earlier = rs.list_runs(kind="experiment", limit=50)
    if earlier:
        ids = [r.id for r in earlier]
        labels = {r.id: experiment_label(r) for r in earlier}
        index = ids.index(run_id) if run_id in ids else None
        chosen = st.selectbox(
            "Results",
            ids,
            index=index,
            format_func=labels.get,
            placeholder="an earlier or running experiment",
            key="exp_history",
        )
        if chosen and chosen != run_id:
            st.query_params[URL_KEY] = chosen
            st.rerun()
    if not run_id:
        st.info("Pick an experiment, look at its settings and press Start.")
        return
    active = current is not None and current.active
    st.session_state["exp_shown_status"] = current.status if current is not None else None
    st.fragment(live_panel, run_every=POLL_S if active else None)(run_id)


if __name__ == "__main__":  # `streamlit run kdviz/ui/experiments_page.py` shows the page alone
    render()
