"""Page "Present": a lesson mode that walks a class through Hinton et al. (2015) in seven
screens, each with one sentence, one chart and one control, on the shipped MNIST models.

The sidebar is hidden and the fonts enlarged; Back / Next (also the arrow keys) move between
steps and the step is in the URL (``?step=3``), so a link opens that screen. The two live steps
start short background runs through ``kdviz.jobs``, as the Distill page does.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from kdviz import analysis, jobs, plots, soft
from kdviz.errors import KdvizError
from kdviz.runs import Run

DATASET, SPLIT = "mnist5k", "test"
TEACHER = "mnist5k-teacher"
STUDENT = "mnist5k-mlp800-distilled"  # Hinton's 2x800 MLP, distilled at T = 20 (chosen by CV)
BASELINE = "mnist5k-mlp800-baseline"  # the same MLP on hard labels
LESSON_T = 4.0  # the temperature the story settles on: the digits' dark knowledge is visible
# the live runs' length, as on Distill (~15 s a run on 2 CPU cores); at 4 the baseline can win
LIVE_EPOCHS = jobs.DEFAULT_EPOCHS
LIVE_ARCH = "mlp-800-800"
OMITTED = 3  # the class left out of the transfer set in the last step (as in the paper)
OMIT_T = 20.0  # Hinton et al. distilled the omitted-3 student at T = 20
POLL_S = 1.0
URL_STEP, URL_RUN, URL_OMIT = "step", "lesson_run", "lesson_omit"
IMAGE_PX = 196
T_CHOICES = tuple(t for t in analysis.TEMPERATURE_GRID if 1.0 <= t <= 50.0)

# Fonts and widths for a projector; the sidebar (and its toggle) hidden: nothing to touch there.
_STYLE = """<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"] { display: none !important; }
[data-testid="stMainBlockContainer"] { max-width: 1280px; padding-top: 2.5rem; }
[data-testid="stMainBlockContainer"] [data-testid="stMarkdown"] p { font-size: 1.45rem; }
[data-testid="stMainBlockContainer"] button p { font-size: 1.15rem; }
[data-testid="stMainBlockContainer"] h1 { font-size: 2.4rem; }
[data-testid="stWidgetLabel"] p { font-size: 1.15rem !important; }
</style>"""


@dataclass(frozen=True)
class Step:
    title: str
    sentence: str


STEPS: tuple[Step, ...] = (
    Step(
        "A confident digit",
        "The teacher is sure: at T = 1 nearly all of its probability sits on one class.",
    ),
    Step(
        "Raise the temperature",
        "Dividing the logits by T before the softmax flattens the distribution without changing "
        "which class comes first.",
    ),
    Step(
        "The dark knowledge appears",
        "As T grows the other classes rise in a fixed order: how much this image resembles each "
        "digit, which the hard label never says.",
    ),
    Step(
        "Class similarity",
        "Averaged over all test images, the soft targets map which digits the teacher finds alike.",
    ),
    Step(
        "What a student learns",
        "A small network trained on these soft targets copies the teacher's ranking of the other "
        "classes; one trained on hard labels does not.",
    ),
    Step(
        "Distil it live",
        "Now train that student for a few epochs, next to the same network on hard labels only.",
    ),
    Step(
        "The omitted class",
        f"A student that never saw a {OMITTED} predicts none, yet once its {OMITTED}-output is "
        "raised (by a bias chosen on the validation split) it recognises many of them: it learned "
        f"the {OMITTED}s from the teacher's soft targets on other digits.",
    ),
)


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Lesson:
    """The shipped models' logits on the bundled test split."""

    labels: torch.Tensor  # (N,)
    class_names: tuple[str, ...]
    teacher: torch.Tensor  # (N, K)
    student: torch.Tensor  # (N, K) distilled MLP
    baseline: torch.Tensor  # (N, K) the same MLP on hard labels
    images: tuple[int, ...]  # a few confident images rich in dark knowledge, best first


@st.cache_resource(show_spinner="Loading the shipped models' logits…")
def lesson_data() -> Lesson:
    from kdviz.data import load_dataset
    from kdviz.engine import dataset_logits

    ds = load_dataset(DATASET, SPLIT, download=False)
    teacher = dataset_logits(TEACHER, DATASET, SPLIT)
    return Lesson(
        labels=ds.labels,
        class_names=tuple(ds.class_names),
        teacher=teacher,
        student=dataset_logits(STUDENT, DATASET, SPLIT),
        baseline=dataset_logits(BASELINE, DATASET, SPLIT),
        images=confident_images(teacher, ds.labels),
    )


def confident_images(logits: torch.Tensor, labels: torch.Tensor, n: int = 4) -> tuple[int, ...]:
    """Images the teacher gets right with p > 0.99 at T = 1 whose soft targets at LESSON_T carry
    the most mass off the true class: confident, yet full of dark knowledge."""
    p1 = soft.soften(logits, 1.0)  # (N, K)
    confident = (p1.argmax(-1) == labels) & (p1.max(-1).values > 0.99)
    dark = soft.dark_mass(soft.soften(logits, LESSON_T), labels)  # (N,)
    dark = torch.where(confident, dark, torch.full_like(dark, -1.0))
    return tuple(int(i) for i in dark.argsort(descending=True)[:n])


# ---------------------------------------------------------------------------- navigation


def current_step() -> int:
    """The step in the URL (1-based), clamped to the lesson."""
    try:
        step = int(st.query_params.get(URL_STEP, 1))
    except ValueError:
        step = 1
    return min(max(step, 1), len(STEPS))


def _go(step: int) -> None:
    st.query_params[URL_STEP] = str(min(max(step, 1), len(STEPS)))


def _header(step: int, spec: Step) -> None:
    """The title with Back / Next beside it: on a 720-pixel projector they stay on screen."""
    title, back, forward = st.columns([6, 1, 1], vertical_alignment="center")
    title.title(f"{step}/{len(STEPS)} · {spec.title}", anchor=False)
    back.button(
        "Back", key="lesson_back", on_click=_go, args=(step - 1,), disabled=step == 1,
        shortcut="ArrowLeft", width="stretch", help="or the left arrow key",
    )  # fmt: skip
    forward.button(
        "Next", key="lesson_next", on_click=_go, args=(step + 1,),
        disabled=step == len(STEPS), shortcut="ArrowRight", type="primary", width="stretch",
        help="or the right arrow key",
    )  # fmt: skip


def _big(fig, height: int = 400):
    """Projector sizes: larger type, a bounded height (the whole step fits 1280x720)."""
    fig.update_layout(height=height, font={"size": 16}, title_font_size=19)
    return fig


# ---------------------------------------------------------------------------- charts


def _image(lesson: Lesson) -> int:
    return int(st.session_state.get("lesson_image", lesson.images[0]))


def _bars(lesson: Lesson, index: int, temperature: float, models: dict[str, torch.Tensor], *,
          log_y: bool = False, title: str = "") -> None:  # fmt: skip
    frame = analysis.soft_target_frame(
        {name: logits[index] for name, logits in models.items()}, temperature, lesson.class_names
    )
    fig = plots.soft_target_bars(frame, log_y=log_y, title=title)
    _big(fig, 380)
    st.plotly_chart(fig, key="lesson_chart", config={"displayModeBar": False})


def _picture(lesson: Lesson, index: int) -> None:
    from kdviz.ui import cache

    st.image(cache.image_png(DATASET, SPLIT, index, IMAGE_PX), width=IMAGE_PX)
    st.caption(f"test image #{index}, labelled {lesson.class_names[int(lesson.labels[index])]}")


def _t_slider(key: str, default: float) -> float:
    return st.select_slider(
        "Temperature T", options=T_CHOICES, value=default, key=key,
        format_func=analysis.format_temperature,
    )  # fmt: skip


def step_confident(lesson: Lesson) -> None:
    left, right = st.columns([1, 3])
    with left:
        index = st.radio(
            "Image", lesson.images, key="lesson_image", format_func=lambda i: f"#{i}",
            horizontal=True,
        )  # fmt: skip
        _picture(lesson, index)
    with right:
        _bars(lesson, index, 1.0, {analysis.TEACHER: lesson.teacher}, title="Teacher at T = 1")


def step_raise_t(lesson: Lesson) -> None:
    index = _image(lesson)
    left, right = st.columns([1, 3])
    with left:
        temperature = _t_slider("lesson_T2", LESSON_T)
        _picture(lesson, index)
    with right:
        t = analysis.format_temperature(temperature)
        _bars(lesson, index, temperature, {analysis.TEACHER: lesson.teacher},
              title=f"Teacher at T = {t} (ticks: T = 1)")  # fmt: skip


def step_dark_knowledge(lesson: Lesson) -> None:
    index = _image(lesson)
    temperature = _t_slider("lesson_T3", LESSON_T)
    frame = analysis.temperature_curve_frame(
        lesson.teacher[index], analysis.curve_temperatures(), lesson.class_names
    )
    true = lesson.class_names[int(lesson.labels[index])]
    p = soft.soften(lesson.teacher[index : index + 1], temperature)[0].clone()
    p[int(lesson.labels[index])] = -1.0
    runner_up = lesson.class_names[int(p.argmax())]
    fig = plots.temperature_curves(
        frame, temperature=temperature, highlight=(true, runner_up),
        title=f"Image #{index}: each class's probability as T moves (thick: {true} and {runner_up})",
    )  # fmt: skip
    _big(fig, 400)
    st.plotly_chart(fig, key="lesson_chart", config={"displayModeBar": False})


def step_similarity(lesson: Lesson) -> None:
    temperature = _t_slider("lesson_T4", LESSON_T)
    matrix = analysis.similarity_matrix(
        lesson.teacher, lesson.labels, temperature, lesson.class_names
    )
    t = analysis.format_temperature(temperature)
    fig = plots.matrix_heatmap(
        analysis.off_diagonal(matrix), height=440,
        title=f"Mean soft target of the teacher per true class at T = {t} (diagonal left out)",
    )  # fmt: skip
    st.plotly_chart(_big(fig, 440), key="lesson_chart", config={"displayModeBar": False})


def step_student(lesson: Lesson) -> None:
    index = _image(lesson)
    which = st.segmented_control(
        "Student", ("distilled", "hard labels"), default="distilled", required=True,
        key="lesson_student",
    )  # fmt: skip
    student = lesson.student if which == "distilled" else lesson.baseline
    t = analysis.format_temperature(LESSON_T)
    _bars(lesson, index, LESSON_T, {analysis.TEACHER: lesson.teacher, analysis.STUDENT: student},
          log_y=True, title=f"Image #{index} at T = {t}: teacher and the {which} 2x800 MLP "
          "(log axis)")  # fmt: skip


# ---------------------------------------------------------------------------- live steps


def live_config(**changes):
    """The lesson's short run: the shipped teacher into a 2x800 MLP, KD at T = 4."""
    return jobs.default_config(TEACHER, **{"epochs": LIVE_EPOCHS, "arch": LIVE_ARCH, **changes})


def _start(url_key: str, baseline: bool, **changes) -> None:
    from kdviz.ui.distill import store

    try:
        runs = jobs.start_distill(live_config(**changes), baseline=baseline, store=store())
    except KdvizError as err:
        st.session_state["lesson_error"] = str(err)
        return
    st.query_params[url_key] = runs[0].id


def _group(url_key: str) -> list[Run]:
    from kdviz.ui.distill import store

    run_id = st.query_params.get(url_key)
    rs = store()
    run = rs.find(run_id) if run_id else None
    return rs.group(run.group_id) if run is not None else []


def step_live(lesson: Lesson) -> None:
    runs = _group(URL_RUN)
    st.button(
        "Start the run" if not runs else "Start again", key="lesson_start", type="primary",
        on_click=_start, args=(URL_RUN, True), disabled=any(r.active for r in runs),
    )  # fmt: skip
    if runs:
        active = any(r.active for r in runs)
        st.fragment(_live_chart, run_every=POLL_S if active else None)(runs[0].id)


def _live_chart(run_id: str) -> None:
    from kdviz.ui.distill import curve_figure, metrics_frame, progress_text, store

    rs = store()
    run = rs.find(run_id)
    if run is None:
        return
    runs = rs.group(run.group_id)
    for r in runs:
        if r.active:
            st.progress(r.progress, text=progress_text(r, rs))
    split = run.config.get("eval_split", "test")
    frame = metrics_frame(rs, runs, [f"{split}/accuracy"])
    fig = curve_figure(
        frame, [f"{split}/accuracy"], y_title="test accuracy",
        title="Test accuracy after each epoch: distilled student vs hard-label baseline",
    )  # fmt: skip
    _big(fig, 380)
    st.plotly_chart(fig, key="lesson_chart", config={"displayModeBar": False})
    if st.session_state.get("lesson_live") and not any(r.active for r in runs):
        st.session_state.pop("lesson_live")
        st.rerun()  # the run just ended: stop polling
    st.session_state["lesson_live"] = any(r.active for r in runs)


def class_accuracy_frame(lesson: Lesson, models: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Long frame: class, model, accuracy (on the test images of that class)."""
    parts = []
    for name, logits in models.items():
        per_class = analysis.per_class_frame(
            lesson.teacher, logits, lesson.labels, LESSON_T, lesson.class_names
        )
        parts.append(
            pd.DataFrame(
                {
                    "class": per_class["class"],
                    "model": name,
                    "accuracy": per_class["student_accuracy"],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def omitted_models(checkpoint: str) -> dict[str, torch.Tensor]:
    """The omitted-class student's test logits as trained, and with its output bias for the
    omitted class raised until it predicts that class as often as the class occurs (chosen on
    the validation split: no test label is used), as in Hinton et al.'s section 3."""
    from kdviz.data import load_dataset
    from kdviz.engine import dataset_logits
    from kdviz.experiments.transforms import bias_for_share, shift_class

    prior = float((load_dataset(DATASET, "train").labels == OMITTED).float().mean())
    bias = bias_for_share(dataset_logits(checkpoint, DATASET, "val"), OMITTED, prior)
    logits = dataset_logits(checkpoint, DATASET, SPLIT)
    return {
        f"never saw a {OMITTED}": logits,
        f"never saw a {OMITTED}, its bias +{bias:.1f}": shift_class(logits, OMITTED, bias),
    }


def step_omitted(lesson: Lesson) -> None:
    runs = _group(URL_OMIT)
    run = runs[0] if runs else None
    st.button(
        f"Train a student that never sees a {OMITTED}", key="lesson_omit_start", type="primary",
        on_click=_start, args=(URL_OMIT, False),
        kwargs={"omit_classes": (OMITTED,), "temperature": OMIT_T},
        disabled=run is not None and run.active,
    )  # fmt: skip
    st.fragment(_omitted_chart, run_every=POLL_S if run and run.active else None)(lesson)


def _omitted_chart(lesson: Lesson) -> None:
    from kdviz.ui.distill import progress_text, store

    runs = _group(URL_OMIT)
    models = {"distilled student, all digits": lesson.student}
    if runs and runs[0].active:
        st.progress(runs[0].progress, text=progress_text(runs[0], store()))
        st.session_state["lesson_omit_live"] = True
    elif runs and runs[0].status == "done" and runs[0].checkpoint:
        models.update(omitted_models(runs[0].checkpoint))
    elif runs:
        st.warning(f"The run ended: {runs[0].status}. {runs[0].message}")
    frame = class_accuracy_frame(lesson, models)
    fig = plots.class_accuracy_bars(
        frame, highlight=lesson.class_names[OMITTED],
        title=f"Test accuracy per digit (the {OMITTED}s outlined)",
    )  # fmt: skip
    _big(fig, 400)
    st.plotly_chart(fig, key="lesson_chart", config={"displayModeBar": False})
    if st.session_state.get("lesson_omit_live") and not (runs and runs[0].active):
        st.session_state.pop("lesson_omit_live")
        st.rerun()


# ---------------------------------------------------------------------------- page

BODIES = (
    step_confident,
    step_raise_t,
    step_dark_knowledge,
    step_similarity,
    step_student,
    step_live,
    step_omitted,
)


def render() -> None:
    """The "Present" page."""
    st.html(_STYLE)
    step = current_step()
    if st.query_params.get(URL_STEP) != str(step):
        st.query_params[URL_STEP] = str(step)  # every screen has its own link
    spec = STEPS[step - 1]
    _header(step, spec)
    st.markdown(spec.sentence)
    try:
        lesson = lesson_data()
    except KdvizError as err:
        st.error(str(err))
        return
    if "lesson_image" not in st.session_state:
        st.session_state["lesson_image"] = lesson.images[0]
    if "lesson_error" in st.session_state:
        st.error(st.session_state.pop("lesson_error"))
    BODIES[step - 1](lesson)
    st.page_link(
        "kdviz/ui/soft_targets.py", label="Leave the lesson (back to the explorer)",
        icon=":material/logout:",
    )  # fmt: skip


if __name__ == "__main__":
    # Streamlit runs this file as a script; render through the imported module so that tests can
    # patch its settings (LIVE_EPOCHS, LIVE_ARCH) on kdviz.ui.lesson.
    from kdviz.ui import lesson as _module

    _module.render()
