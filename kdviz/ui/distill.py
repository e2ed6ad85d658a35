"""Page "Distill": a form that starts a background distillation run (and its hard-label baseline)
and a panel that follows it live: progress, time left, curves, Cancel.

The run id goes into the URL (``?run=ID``), so a reload or a second tab re-attaches to the run.
The live panel is an ``st.fragment`` that reruns every ``POLL_S`` seconds while a run is active;
the run itself is a separate OS process (``kdviz.jobs``), never a thread of this server.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kdviz import jobs
from kdviz.errors import KdvizError
from kdviz.runs import ACTIVE, Run, RunStore

MAX_POINTS = 1500  # per curve sent to the browser; longer curves are thinned evenly
POLL_S = 0.5  # live panel refresh while a run is active (curves update at least once a second)
DEFAULT_TEACHER = "mnist5k-teacher"
ARCH_FAMILIES = ("mlp", "lenet", "cnn-wide", "resnet8", "resnet20")
METHOD_LABELS = {
    "kd": "KD (Hinton et al. 2015)",
    "mse": "logit MSE (logit matching)",
    "dkd": "DKD (Zhao et al. 2022)",
}
BATCH_SIZES = (32, 64, 128, 256, 512)
ROLE_DASH = {"student": "solid", "baseline": "dash"}
ROLE_COLOR = {"student": "#1f77b4", "baseline": "#ff7f0e"}
PART_DASH = {"train/loss": "solid", "train/kd_loss": "dot", "train/task_loss": "dashdot"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
CURVES = (  # (title, y-axis title, metric names) of the live panel's charts after the loss
    ("Test accuracy", "accuracy", ("{split}/accuracy",)),
    ("Agreement with the teacher", "top-1 agreement", ("{split}/agreement",)),
    ("KL to the teacher", "KL(teacher || student)", ("{split}/kl",)),
)
PART_LABELS = {"train/loss": "loss", "train/kd_loss": "soft term", "train/task_loss": "hard term"}
STAGES = (  # what a run does before its first step, in order (the worker writes them)
    "starting",
    "loading PyTorch",
    "loading data",
    "computing teacher logits",
    "training",
)
FEW_POINTS = 5  # a training curve with fewer points is drawn with markers (one point shows)
SPEED_METRIC = "train/images_per_s"  # one row per epoch (jobs.MetricsWriter)
PRECISION_LABELS = {"auto": "auto", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16 (CUDA)"}
# Below 1000 px (shell.NARROW_PX) the form's four-column rows wrap two to a row: at ~820 px a
# quarter of the form is ~140 px, which cuts a select's value ("KD (Hinton et al. 2015").
FORM_STYLE = """<style>
@media (max-width: 999px) {
  .st-key-distill_form [data-testid="stHorizontalBlock"] { flex-wrap: wrap; }
  .st-key-distill_form [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {
    min-width: calc(50% - 1rem) !important; }
}
</style>"""
PRECISION_HELP = (
    "auto: bf16 autocast on CUDA GPUs that have it, fp32 elsewhere; bf16 also runs on the CPU; "
    "fp16 needs a CUDA GPU. Losses, softmax at T and metrics stay fp32."
)


# ---------------------------------------------------------------------------- pure helpers


def store() -> RunStore:
    """The run store, with finished workers reaped and dead runs marked interrupted.

    When a run finished (or was deleted) since this session last looked, the app's checkpoint
    list is refreshed, so its student shows in every model picker at once.
    """
    rs = jobs.refresh(RunStore(recover=False))
    version = rs.version()
    if st.session_state.get("runs_version") != version:
        if "runs_version" in st.session_state:
            pickers_changed()
        st.session_state["runs_version"] = version
    return rs


def run_label(run: Run) -> str:
    return "baseline (hard labels)" if run.role == "baseline" else "student"


def metrics_frame(store: RunStore, runs: list[Run], names: list[str] | None = None) -> pd.DataFrame:
    """Tidy metric rows of ``runs``: run_id, run (label), role, step, epoch, name, value."""
    rows = store.metrics([run.id for run in runs], names=names)
    frame = pd.DataFrame(rows, columns=["id", "run_id", "step", "epoch", "name", "value"])
    labels = {run.id: run_label(run) for run in runs}
    roles = {run.id: run.role for run in runs}
    frame["run"] = frame["run_id"].map(labels)
    frame["role"] = frame["run_id"].map(roles)
    return _thin(frame)


def _thin(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most about ``max_points`` rows per (run, metric), evenly spaced, the last one kept:
    a long run's curves stay cheap to send every poll."""
    if frame.empty:
        return frame
    position = frame.groupby(["run_id", "name"]).cumcount()
    size = frame.groupby(["run_id", "name"])["id"].transform("size")
    stride = (size // max_points + 1).where(size > max_points, 1)
    keep = (position % stride == 0) | (position == size - 1)
    return frame[keep]


def curve_figure(
    frame: pd.DataFrame,
    names: tuple[str, ...] | list[str],
    *,
    title: str,
    y_title: str,
    label_of: dict[str, str] | None = None,
) -> go.Figure:
    """One line per (run, metric) against epochs. Never calls ``st``.

    Without ``label_of`` (the live panel) the colour is the role (student, baseline) and the
    dash the loss part; with it (the Runs page) each run gets its own colour, baselines dashed.
    """
    fig = go.Figure()
    by_run = label_of is not None
    label_of = label_of or {}
    run_ids = list(dict.fromkeys(frame["run_id"]))
    for name in names:
        part = frame[frame["name"] == name]
        for run_id, rows in part.groupby("run_id", sort=False):
            role = rows["role"].iloc[0]
            if role == "baseline" and name == "train/task_loss":
                continue  # the baseline's loss is its hard term
            label = label_of.get(run_id) or rows["run"].iloc[0]
            if len(names) > 1:
                label = f"{label}: {PART_LABELS.get(name, name)}"
            if by_run:
                color = PALETTE[run_ids.index(run_id) % len(PALETTE)]
                dash = ROLE_DASH.get(role, "solid")
            else:
                color = ROLE_COLOR.get(role, PALETTE[0])
                dash = PART_DASH.get(name, "solid")
            fig.add_trace(
                go.Scatter(
                    x=rows["epoch"],
                    y=rows["value"],
                    mode="lines" if name.startswith("train/") else "lines+markers",
                    name=label,
                    line={"dash": dash, "color": color},
                )
            )
    fig.update_layout(
        title=title,
        xaxis_title="epoch",
        yaxis_title=y_title,
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
        uirevision="keep",  # keep the user's zoom across live updates
    )
    return fig


def progress_text(run: Run, store: RunStore) -> str:
    """One line for a run's progress bar: epoch, step, time left, or its place in the queue."""
    label = run_label(run).capitalize()
    epochs = int(run.config.get("epochs", 0))
    if run.cancel_requested is not None:
        return f"{label}: cancelling…"
    if run.status == "queued":
        place, running = store.queue_position(run.id)
        return f"{label}: waiting, place {place} in the queue ({running} running)"
    if run.status == "running":
        if not run.total_steps:
            return f"{label}: {stage_line(run.message)}"
        epoch = min(epochs, max(1, math.ceil(run.epoch))) if epochs else 0
        left = jobs.eta_text(run.eta)
        text = f"{label}: epoch {epoch}/{epochs} · step {run.step}/{run.total_steps}"
        return f"{text} · {left}" if left else text
    return f"{label}: {run.status}"


def stage_line(message: str) -> str:
    """ "stage 4/5: computing teacher logits 1,024/4,500 images" from a starting run's message."""
    message = message or STAGES[0]
    number = next((i for i, s in enumerate(STAGES, 1) if message.startswith(s)), None)
    return f"stage {number}/{len(STAGES)}: {message}" if number else message


def _hard_weight(cfg: dict[str, Any]) -> float:
    """The weight the run's loss puts on cross-entropy: 1 - alpha for KD and MSE, 1 for DKD."""
    if cfg.get("kind") != "distill" or cfg.get("method") == "dkd":
        return 1.0
    return 1.0 - float(cfg.get("alpha", 0.0))


def loss_figure(frame: pd.DataFrame, runs: list[Run]) -> go.Figure:
    """Two panels, each on its own axis: the soft term as the optimiser sees it (alpha * T^2 * KL
    for KD), and the cross-entropy with the labels divided by its weight, so the student and the
    baseline read on the same scale. Never calls ``st``."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Soft term (teacher)", "Hard term: cross-entropy with the labels"),
        horizontal_spacing=0.12,
    )
    for run in runs:
        rows = frame[frame["run_id"] == run.id]
        color = ROLE_COLOR.get(run.role, PALETTE[0])
        dash = ROLE_DASH.get(run.role, "solid")
        label = run_label(run)
        soft = rows[rows["name"] == "train/kd_loss"]
        if run.role != "baseline" and not soft.empty:
            fig.add_trace(
                _loss_trace(soft, soft["value"], f"{label}: soft term", color, dash), 1, 1
            )
        hard = rows[rows["name"] == "train/task_loss"]
        weight = _hard_weight(run.config)
        if weight > 0 and not hard.empty and not run.config.get("drop_labels"):
            name = f"{label}: cross-entropy"
            fig.add_trace(_loss_trace(hard, hard["value"] / weight, name, color, dash), 1, 2)
    soft_axis = "α·T²·KL(teacher ‖ student)" if runs and _method(runs[0]) == "kd" else "soft term"
    fig.update_yaxes(title_text=soft_axis, row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy (nats)", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_annotations(font_size=13)
    fig.update_layout(
        title="Training loss",
        height=340,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"orientation": "h", "y": -0.3},
        uirevision="keep",
    )
    return fig


def _method(run: Run) -> str:
    return str(run.config.get("method", "")) if run.kind == "distill" else ""


def _loss_trace(rows: pd.DataFrame, values: pd.Series, name: str, color: str, dash: str):
    few = len(rows) < FEW_POINTS  # a single point of a line is invisible without its marker
    return go.Scatter(
        x=rows["epoch"],
        y=values,
        mode="lines+markers" if few else "lines",
        name=name,
        line={"dash": dash, "color": color},
    )


def loss_caption(cfg: dict[str, Any]) -> str:
    """One sentence on what the two loss panels show (and what T² does)."""
    method = cfg.get("method", "")
    if method == "kd":
        t, alpha = float(cfg.get("temperature", 1.0)), float(cfg.get("alpha", 0.0))
        return (
            f"Left: the soft term as the optimiser sees it, α·T²·KL = {alpha:g} × {t * t:g} × KL; "
            "the T² keeps its gradient on the same scale whatever T is (softened targets shrink "
            "the gradient by 1/T², Hinton et al. 2015), so its size is not comparable with the "
            f"right panel's. Right: cross-entropy with the labels before its weight 1 − α = "
            f"{1 - alpha:g}, so the student and the hard-label baseline compare directly."
        )
    return (
        "Left: the teacher term of the loss, as weighted in the loss; right: cross-entropy with "
        "the labels before its weight, so the student and the hard-label baseline compare "
        "directly. The two panels have their own scales."
    )


def model_name(family: str, layers: int, width: int) -> str:
    """The registry name of the chosen student, e.g. ("mlp", 2, 800) -> "mlp-800-800"."""
    if family == "mlp":
        return "mlp-" + "-".join([str(int(width))] * int(layers))
    return family


# ---------------------------------------------------------------------------- the form


def _checkpoint_options() -> list[tuple[str, Any]]:
    from kdviz.ui import cache

    try:
        return [(name, card) for name, _stem, card in cache.checkpoint_list()]
    except KdvizError:
        return []


def device_options() -> dict[str, str]:
    """Value -> label of the devices present: auto, each CUDA GPU by name, MPS, the CPU."""
    import torch

    from kdviz.engine import pick_device

    options = {"auto": f"auto: {jobs.device_name(pick_device('auto'))}"}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            options[f"cuda:{i}"] = f"GPU {i}: {torch.cuda.get_device_name(i)}"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        options["mps"] = "MPS (Apple GPU)"
    options["cpu"] = f"CPU ({os.cpu_count() or 1} cores)"
    return options


def precision_problem(device: str, name: str) -> str:
    """The sentence that refuses ``name`` on ``device`` (fp16 without CUDA...), or ""."""
    from kdviz.engine import pick_device
    from kdviz.precision import resolve_precision

    try:
        resolve_precision(name, pick_device(device))
    except KdvizError as err:
        return str(err)
    return ""


def speed_line(runs: list[Run], frame: pd.DataFrame) -> str:
    """ "Training speed: student 12,345 images/s · baseline …" from the epochs' images/s.

    A finished run gives its last epoch's figure (its stored metrics); a running one the last
    epoch it finished (the metric rows), or says the figure comes after the first epoch."""
    parts = []
    for run in runs:
        value = run.metrics.get("images_per_s") if run.status == "done" else None
        if value is None and not frame.empty:
            rows = frame[(frame["run_id"] == run.id) & (frame["name"] == SPEED_METRIC)]
            value = float(rows["value"].iloc[-1]) if not rows.empty else None
        if isinstance(value, (int, float)) and value > 0:
            parts.append(f"{run_label(run)} {value:,.0f} images/s")
        elif run.status in ACTIVE:
            parts.append(f"{run_label(run)}: images/s after its first epoch")
    if not parts:
        return ""
    return "Training speed (last epoch, evaluation not counted): " + " · ".join(parts)


def _form() -> tuple[Any, bool] | None:
    """Draw the run form; returns (DistillConfig, with_baseline) when Start was pressed."""
    from kdviz.engine import AUGMENTATIONS, DistillConfig

    options = _checkpoint_options()
    if not options:
        st.info(
            "No checkpoint to use as a teacher was found; train one with `kdviz train` or put a "
            "checkpoint in KDVIZ_HOME/checkpoints."
        )
        return None
    names = [name for name, _card in options]
    cards = dict(options)
    # the teacher being explored in the sidebar (?teacher= in the URL), else the shipped one
    preferred = [st.session_state.get("teacher"), DEFAULT_TEACHER]
    default = next((names.index(n) for n in preferred if n in names), 0)
    d = jobs.default_config()

    col_t, col_s = st.columns(2)
    with col_t:
        teacher = st.selectbox(
            "Teacher",
            names,
            index=default,
            key="distill_teacher",
            help="A checkpoint, an ensemble card, or a student of an earlier run.",
        )
        card = cards[teacher]
        acc = card.metrics.get("test_accuracy")
        acc_text = f", test accuracy {acc:.2%}" if isinstance(acc, (int, float)) else ""
        kind = f"ensemble of {len(card.members)}" if card.kind == "ensemble" else card.arch
        st.caption(f"{kind} on {card.dataset or '?'}, {card.num_classes} classes{acc_text}")
    with col_s:
        family = st.selectbox("Student architecture", ARCH_FAMILIES, key="distill_family")
        layers, width = 2, 800
        if family == "mlp":
            c1, c2 = st.columns(2)
            layers = c1.number_input(
                "Hidden layers", 1, 6, 2, key="distill_layers", help="ReLU layers of equal width"
            )
            width = c2.number_input("Units per layer", 4, 4096, 800, step=10, key="distill_width")
        st.caption(f"student: `{model_name(family, layers, width)}`")

    c1, c2, c3, c4 = st.columns([1.6, 1, 1, 1])  # the method's names are the longest values
    method = c1.selectbox(
        "Method",
        list(METHOD_LABELS),
        format_func=METHOD_LABELS.get,
        key="distill_method",
    )
    temperature = c2.number_input(
        "Temperature T", 0.1, 100.0, float(d.temperature), step=0.5, key="distill_temperature"
    )
    if method == "dkd":
        alpha = c3.number_input("alpha (TCKD)", 0.0, 100.0, 1.0, step=0.5, key="distill_dkd_alpha")
        beta = c4.number_input("beta (NCKD)", 0.0, 100.0, float(d.beta), key="distill_beta")
    else:
        alpha = c3.number_input(
            "alpha (soft-term weight)", 0.0, 1.0, float(d.alpha), step=0.05, key="distill_alpha"
        )
        beta = d.beta

    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", 1, 5000, d.epochs, key="distill_epochs")
    lr = c2.number_input(
        "Learning rate", 1e-8, None, float(d.lr), format="%g", step=1e-4, key="distill_lr"
    )
    batch_size = c3.selectbox(
        "Batch size", BATCH_SIZES, index=BATCH_SIZES.index(d.batch_size), key="distill_batch"
    )
    augment = c4.selectbox("Augmentation", AUGMENTATIONS, key="distill_augment")

    st.markdown("**Transfer set**")
    c1, c2, c3 = st.columns([1, 2, 1])
    fraction = c1.slider(
        "Fraction of the training split", 0.01, 1.0, 1.0, step=0.01, key="distill_fraction"
    )
    class_names = list(card.class_names)
    omitted = c2.multiselect(
        "Without these classes",
        list(range(len(class_names))),
        format_func=lambda i: class_names[i],
        key="distill_omit",
    )
    drop_labels = c3.checkbox(
        "Drop the labels", False, key="distill_drop_labels", help="soft targets only"
    )

    c1, c2, c3, c4 = st.columns([1, 1.6, 1, 1])  # a GPU's name is long
    seed = c1.number_input("Seed", 0, 2**31 - 1, 0, key="distill_seed")
    devices = device_options()
    device = c2.selectbox(
        "Device", list(devices), format_func=devices.get, key="distill_device",
        help="auto takes the first GPU, then MPS, then the CPU",
    )  # fmt: skip
    prec = c3.selectbox(
        "Precision", list(PRECISION_LABELS), format_func=PRECISION_LABELS.get,
        key="distill_precision", help=PRECISION_HELP,
    )  # fmt: skip
    eval_split = c4.selectbox("Evaluate on", ("test", "val"), key="distill_eval_split")
    baseline = st.checkbox(
        "Also train a hard-label baseline with the same settings", True, key="distill_baseline"
    )
    problem = precision_problem(device, prec)
    if problem:  # fp16 without a CUDA GPU: refused before Start, in one sentence
        st.error(problem)
    if not st.button("Start", type="primary", key="distill_start", disabled=bool(problem)):
        return None
    cfg = DistillConfig(
        dataset=card.dataset,
        arch=model_name(family, layers, width),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        augment=augment,
        seed=int(seed),
        device=device,
        precision=prec,
        eval_split=eval_split,
        teacher=teacher,
        method=method,
        temperature=float(temperature),
        alpha=float(alpha),
        beta=float(beta),
        transfer_fraction=float(fraction),
        omit_classes=tuple(int(i) for i in omitted),
        drop_labels=bool(drop_labels),
    )
    return cfg, bool(baseline)


# ---------------------------------------------------------------------------- live panel


def pickers_changed() -> None:
    """A run finished or was deleted: every model picker of the app sees it at once."""
    from kdviz.ui import cache

    cache.checkpoint_list.clear()


def _status_box(run: Run) -> None:
    label = run.name or run_label(run).capitalize()  # the name says KD or hard labels
    text = f"{label}: {run.message or run.status}"
    if run.status == "done":
        st.success(text)
    elif run.status in ("failed", "diverged"):
        st.error(text)
    elif run.status in ("cancelled", "interrupted"):
        st.warning(text)


def live_panel(run_id: str) -> None:
    """Progress, curves and Cancel for the group of ``run_id`` (student and baseline)."""
    rs = store()
    run = rs.find(run_id)
    if run is None:
        st.warning(f"There is no run {run_id!r}; it may have been deleted. Start a new one above.")
        return
    runs = rs.group(run.group_id)
    active = [r for r in runs if r.status in ACTIVE]
    st.subheader(f"Run {runs[0].id}")
    student = runs[0]
    cfg = student.config
    st.caption(
        f"{jobs.method_label(cfg)} · teacher {cfg.get('teacher', '-')} → student "
        f"{cfg.get('arch')} on {cfg.get('dataset')}, {cfg.get('epochs')} epochs · "
        f"device {student.device or '?'}"
    )
    for r in runs:
        if r.status in ACTIVE:
            st.progress(r.progress, text=progress_text(r, rs))
        else:
            _status_box(r)
    if active and st.button("Cancel", key="distill_cancel"):
        for r in active:
            jobs.cancel(r.id, rs)
        st.rerun()

    split = cfg.get("eval_split", "test")
    frame = metrics_frame(rs, runs)
    if frame.empty and not active:
        st.caption("No curves: the run stopped before its first training step.")
    elif frame.empty:  # empty axes now: the browser loads Plotly while the run starts
        st.plotly_chart(
            loss_figure(frame, runs), key="distill_loss", config={"displayModeBar": False}
        )
        st.caption("The curves appear here after the first training steps.")
    else:
        _curves(frame, runs, split)

    was_active = st.session_state.get("distill_active_group") == run.group_id
    if active:
        st.session_state["distill_active_group"] = run.group_id
    elif was_active:  # it just finished: refresh pickers, stop polling
        st.session_state.pop("distill_active_group", None)
        pickers_changed()
        st.rerun()
    speed = speed_line(runs, frame)
    if speed:
        st.caption(speed)
    if not active:
        finished = [r for r in runs if r.status == "done" and r.checkpoint]
        roles = {r.role: r for r in finished}
        if "baseline" in roles and len(roles) == 2:
            (other,) = (r for r in finished if r.role != "baseline")
            try:
                st.caption(comparison_sentence(other, roles["baseline"]))
            except KdvizError as err:  # e.g. a checkpoint deleted since
                st.caption(f"No comparison: {err}")
        for r in finished:
            st.caption(f"{run_label(r)} checkpoint: `{r.id}/student` (in every model picker)")


@st.cache_data(max_entries=32, show_spinner=False)
def _paired(student_stem: str, baseline_stem: str, spec: str, split: str, _mtimes: tuple) -> tuple:
    from kdviz import engine, stats
    from kdviz.data import load_dataset

    labels = load_dataset(spec, split).labels
    correct = [
        stats.correct_vector(engine.dataset_logits(stem, spec, split), labels)
        for stem in (student_stem, baseline_stem)
    ]
    return (
        stats.paired_difference(*correct),
        [float(c.float().mean()) for c in correct],
        len(labels),
    )


def comparison_sentence(student: Run, baseline: Run) -> str:
    """Distilled student vs its hard-label baseline on the same eval images: both accuracies with
    95% Wilson intervals and a paired (Newcombe) interval for the difference, saying when it is
    within noise (one run each: a different seed can move it)."""
    from kdviz import stats
    from kdviz.ui.cache import stem_mtime

    cfg = student.config
    spec, split = cfg.get("dataset", ""), cfg.get("eval_split", "test")
    mtimes = (stem_mtime(student.checkpoint), stem_mtime(baseline.checkpoint))
    diff, (acc_s, acc_b), n = _paired(student.checkpoint, baseline.checkpoint, spec, split, mtimes)
    return (
        f"On the {n:,} {split} images (95% intervals): student {stats.format_accuracy(acc_s, n)}, "
        f"baseline {stats.format_accuracy(acc_b, n)}; student minus baseline "
        f"{stats.paired_difference_text(diff, 'the student', 'the baseline')} One seed each: "
        "rerun with other seeds before calling a small gain a result."
    )


def _curves(frame: pd.DataFrame, runs: list[Run], split: str) -> None:
    """The split training-loss chart (full width) and accuracy, agreement and KL below it."""
    fig = loss_figure(frame, runs)
    st.plotly_chart(fig, key="distill_loss", config={"displayModeBar": False})
    st.caption(loss_caption(runs[0].config))
    cols = st.columns(len(CURVES))
    for i, (title, y_title, names) in enumerate(CURVES):
        names = tuple(n.format(split=split) for n in names)
        if split != "test":
            title = title.replace("Test", split.capitalize())
        with cols[i]:
            fig = curve_figure(frame, names, title=title, y_title=y_title)
            st.plotly_chart(fig, key=f"distill_curve_{i}", config={"displayModeBar": False})


# ---------------------------------------------------------------------------- page


def render() -> None:
    """The "Distill" page."""
    st.title("Distill")
    st.caption(
        "Train a small student on a teacher's soft targets (Hinton, Vinyals & Dean 2015), "
        "next to a student trained on hard labels only."
    )
    run_id = st.query_params.get("run")
    st.html(FORM_STYLE)
    # a new label is a new expander: collapsed once a run is on the page, so the run shows
    label = "Start another run" if run_id else "New run"
    with st.expander(label, expanded=not run_id), st.container(key="distill_form"):
        started = _form()
    if started is not None:
        cfg, baseline = started
        try:
            runs = jobs.start_distill(cfg, baseline=baseline, store=store())
        except KdvizError as err:
            st.error(str(err))
        else:
            st.query_params["run"] = runs[0].id
            st.session_state["distill_active_group"] = runs[0].group_id
            st.rerun()
    if not run_id:
        st.info("Set up a run above and press Start; its curves appear here as it trains.")
        return
    rs = store()
    run = rs.find(run_id)
    active = run is not None and any(r.active for r in rs.group(run.group_id))
    st.fragment(live_panel, run_every=POLL_S if active else None)(run_id)


if __name__ == "__main__":  # `streamlit run kdviz/ui/distill.py` shows the page alone
    render()
