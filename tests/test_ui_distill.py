"""Pages "Distill" and "Runs" through Streamlit's AppTest, with real background worker processes.

`run_every` fragments do not fire under AppTest, so the tests poll by calling ``run()`` again.
"""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import jobs
from kdviz.engine import DistillConfig, TrainConfig, fit
from kdviz.paths import REPO_ROOT, checkpoints_dir
from kdviz.runs import RunStore
from kdviz.ui import distill, runs_page

TEACHER = "tiny-digits-teacher"
DISTILL_PAGE = "kdviz/ui/distill.py"
RUNS_PAGE = "kdviz/ui/runs_page.py"


pytestmark = pytest.mark.usefixtures("no_stray_workers")


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def teacher() -> str:
    """A digits teacher in KDVIZ_HOME/checkpoints, so the pickers offer it as TEACHER."""
    cfg = TrainConfig(
        dataset="digits",
        arch="mlp-30-30",
        epochs=1,
        batch_size=64,
        device="cpu",
        out=str(checkpoints_dir() / TEACHER),
    )
    assert fit(cfg).status == "done"
    return TEACHER


def open_page(page: str, run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=30)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def start(at: AppTest, *, epochs: int = 2, baseline: bool = True, **numbers) -> str:
    """Fill the form for a tiny digits run and press Start; returns the run id from the URL."""
    at.selectbox(key="distill_teacher").set_value(TEACHER)
    at.number_input(key="distill_width").set_value(30)
    at.number_input(key="distill_epochs").set_value(epochs)
    at.selectbox(key="distill_batch").set_value(64)
    at.selectbox(key="distill_device").set_value("cpu")
    for key, value in numbers.items():
        at.number_input(key=f"distill_{key}").set_value(value)
    if not baseline:
        at.checkbox(key="distill_baseline").uncheck()
    at.button(key="distill_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at.query_params["run"]


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def poll(at: AppTest, until, timeout: float = 60.0, what: str = "the run") -> list[str]:
    """Rerun the page (as run_every would) until ``until()``; returns every progress text seen.

    ``until`` is checked often and cheaply; the page itself reruns every second, as a full
    rerun costs CPU the run under test shares."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    last_run = 0.0
    while time.monotonic() < deadline:
        done = until()
        if done or time.monotonic() - last_run >= 1.0:
            at.run()
            last_run = time.monotonic()
            assert not at.exception, [e.value for e in at.exception]
            seen += progress_texts(at)
        if done:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; progress seen: {seen[-3:]}")


def group_finished(store: RunStore, run_id: str) -> bool:
    return not any(r.active for r in store.group(run_id))


def test_runs_started_from_two_sessions_finish_one_after_the_other_and_reach_every_picker(
    teacher, monkeypatch
):
    monkeypatch.delenv("KDVIZ_MAX_RUNS", raising=False)  # the CPU default: one at a time
    first, second = open_page(DISTILL_PAGE), open_page(DISTILL_PAGE)
    id1 = start(first, epochs=2, baseline=True)  # the default: a student and its baseline
    id2 = start(second, epochs=1, baseline=False)
    assert id1 != id2
    store = RunStore()
    student, baseline = store.group(id1)
    assert baseline.role == "baseline" and student.config["teacher"] == TEACHER
    assert any("waiting, place" in t for t in progress_texts(second))

    seen = poll(first, lambda: group_finished(store, id1) and group_finished(store, id2), 120)
    assert any("waiting" in t or "epoch" in t or "starting" in t for t in seen)
    runs = [*store.group(id1), store.get(id2)]
    assert [r.status for r in runs] == ["done", "done", "done"], [r.message for r in runs]
    spans = sorted((r.started, r.finished) for r in runs)
    assert all(
        later[0] >= earlier[1] - 0.05 for earlier, later in zip(spans, spans[1:], strict=False)
    )

    first.run()  # the rerun after the finish refreshes the pickers
    assert len(first.success) == 2 and "Finished 2 epochs" in first.success[0].value
    speed = [c.value for c in first.caption if "images/s" in c.value]
    student = store.get(id1)  # its last epoch: transfer images / that epoch's training seconds
    assert student.metrics["images_per_s"] > 0
    assert speed and f"student {student.metrics['images_per_s']:,.0f} images/s" in speed[0]
    assert len(first.get("plotly_chart")) == 4  # the split loss chart, accuracy, agreement, KL
    # distilled vs baseline: both accuracies and their paired difference, computed here apart
    from kdviz.data import load_dataset
    from kdviz.engine import dataset_logits

    student, baseline = store.group(id1)
    split = student.config["eval_split"]
    labels = load_dataset("digits", split).labels
    right = [
        (dataset_logits(r.checkpoint, "digits", split).argmax(1) == labels).sum().item()
        for r in (student, baseline)
    ]
    compared = next(c.value for c in first.caption if "student minus baseline" in c.value)
    n = len(labels)
    assert f"student {100 * right[0] / n:.1f}% (" in compared
    assert f"baseline {100 * right[1] / n:.1f}% (" in compared
    assert f"{100 * (right[0] - right[1]) / n:+.1f} pts (95% CI" in compared
    # the sidebar lists only checkpoints that fit its data (mnist5k); these are digits students
    first.toggle(key="all_checkpoints").set_value(True).run()
    for run in runs:
        name = f"{run.id}/student"
        assert name in first.selectbox(key="distill_teacher").options
        for picker in ("student", "teacher"):  # the explorer's sidebar, marked "incompatible"
            assert any(o.startswith(name) for o in first.selectbox(key=picker).options)

    # a reload (or a second tab) with the run id in the URL finds the same run
    again = open_page(DISTILL_PAGE, run_id=id1)
    assert first.query_params["run"] == id1
    assert any(id1 in h.value for h in again.subheader)
    assert len(again.success) == 2 and len(again.get("plotly_chart")) == 4


def test_cancel_stops_the_run(teacher):
    at = open_page(DISTILL_PAGE)
    run_id = start(at, epochs=3000, baseline=False)
    store = RunStore()
    shows_time_left = lambda: any("epoch" in t and "left" in t for t in progress_texts(at))  # noqa: E731
    poll(at, shows_time_left, what="the progress bar to show the time left")
    at.button(key="distill_cancel").click().run()
    poll(at, lambda: not store.get(run_id).active, timeout=20)
    assert store.get(run_id).status == "cancelled"
    at.run()
    assert any("Cancelled at step" in w.value for w in at.warning)
    assert "distill_cancel" not in [b.key for b in at.button]


def test_runs_page_filters_overlays_downloads_and_deletes(teacher, capsys):
    from kdviz.cli import main

    for seed in (0, 1):
        args = ["distill", "--teacher", teacher, "--student", "mlp-30-30", "--dataset", "digits"]
        args += ["--epochs", "1", "--device", "cpu", "--seed", str(seed), "--json"]
        args += ["--out", str(checkpoints_dir() / f"cli-{seed}")]
        assert main(args) == 0
    capsys.readouterr()
    store = RunStore()
    runs = store.list_runs()
    assert len(runs) == 2

    at = open_page(RUNS_PAGE)
    table = at.dataframe[0].value
    assert set(table["id"]) == {r.id for r in runs} and set(table["status"]) == {"done"}
    assert len(at.get("plotly_chart")) == 1  # accuracy of the two newest, overlaid
    assert at.get("download_button")

    at.text_input(key="runs_search").input("s1").run()  # the name ends in -s1-...
    assert list(at.dataframe[0].value["name"].str.contains("-s1")) == [True]
    at.text_input(key="runs_search").input("").run()
    at.multiselect(key="runs_status").set_value(["failed"]).run()
    assert at.dataframe[0].value.empty
    at.multiselect(key="runs_status").set_value([]).run()

    victim = at.selectbox(key="runs_manage").value
    at.checkbox(key="runs_delete_sure").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception
    assert store.find(victim) is None
    assert len(at.dataframe[0].value) == 1


def test_page_helpers():
    assert distill.model_name("mlp", 2, 800) == "mlp-800-800"
    assert distill.model_name("lenet", 2, 800) == "lenet"
    store = RunStore()
    cfg = DistillConfig(dataset="digits", epochs=3).to_dict()
    queued = store.create_run(cfg, pid=os.getpid())
    assert "place 1 in the queue (0 running)" in distill.progress_text(queued, store)
    store.claim_slot(queued.id)
    store.log_metrics(queued.id, [], step=10, total_steps=30, epoch=1.2, eta=75.0)
    text = distill.progress_text(store.get(queued.id), store)
    assert text == "Student: epoch 2/3 · step 10/30 · 1 min 15 s left"
    store.log_metrics(queued.id, [(10, 1.2, "train/loss", 1.0), (10, 1.2, "test/accuracy", 0.5)])
    frame = distill.metrics_frame(store, [store.get(queued.id)])
    fig = distill.curve_figure(frame, ["train/loss"], title="t", y_title="y")
    assert [trace.name for trace in fig.data] == ["student"]
    store.finish(queued.id, "done")
    table = runs_page.runs_table(store.list_runs())
    assert runs_page.filter_sort(table, ["done"], "digits", "newest first").shape[0] == 1
    assert runs_page.checkpoint_zip(store.get(queued.id)) is None
    store.create_run({"kind": "experiment", "experiment": "omitted-class"}, name="e")
    store.create_run({"kind": "train"}, name="h")
    table = runs_page.runs_table(store.list_runs()).set_index("name")
    methods = table["method"].to_dict()
    assert methods["e"] == "experiment: omitted-class" and methods["h"] == "hard labels"


def test_checkpoint_zip_holds_the_pair(teacher):
    store = RunStore()
    stem = checkpoints_dir() / TEACHER
    run = store.create_run({"kind": "train"}, name="t", checkpoint=str(stem))
    names = zipfile.ZipFile(io.BytesIO(runs_page.checkpoint_zip(run))).namelist()
    assert sorted(names) == ["t.json", "t.safetensors"]


def test_a_starting_run_names_its_stage(monkeypatch):
    store = RunStore()
    run = store.create_run(DistillConfig(dataset="digits", epochs=3).to_dict(), pid=os.getpid())
    store.claim_slot(run.id)
    assert distill.progress_text(store.get(run.id), store) == "Student: stage 1/5: starting"
    write = jobs.StageWriter(store, run.id)
    write("loading data", 0, 0)
    assert distill.progress_text(store.get(run.id), store) == "Student: stage 3/5: loading data"
    write("teacher logits", 1024, 4500)
    text = distill.progress_text(store.get(run.id), store)
    assert text == "Student: stage 4/5: computing teacher logits 1,024/4,500 images"
    write("teacher logits", 2048, 4500)  # within STAGE_EVERY_S of the last write: skipped
    assert "1,024/4,500" in store.get(run.id).message
    write("teacher logits", 4500, 4500)  # the end of a stage is always written
    assert "4,500/4,500" in store.get(run.id).message
    write("training", 0, 30)
    assert distill.progress_text(store.get(run.id), store).endswith(
        "stage 5/5: training: the first steps"
    )
    store.log_metrics(run.id, [], step=3, total_steps=30, epoch=0.3)  # the first step replaces it
    assert "epoch 1/3 · step 3/30" in distill.progress_text(store.get(run.id), store)


def test_fit_reports_its_stages_in_order(teacher):
    seen: list[tuple[str, int, int]] = []
    cfg = DistillConfig(
        dataset="digits", arch="mlp-30-30", teacher=teacher, epochs=1, device="cpu", batch_size=64
    )
    fit(cfg, save=False, on_stage=lambda *stage: seen.append(stage))
    names = [s[0] for s in seen]
    assert names[0] == "loading data" and names[-1] == "training"
    logits = [s for s in seen if s[0] == "teacher logits"]
    total = logits[0][2]
    assert logits[0][1] == 0 and logits[-1][1] == total > 0  # counts up to every image
    assert [s[1] for s in logits] == sorted(s[1] for s in logits)
    assert seen[-1][2] > 0  # training names its step count


def _loss_rows(store: RunStore, run_id: str, kd: float, task: float) -> None:
    rows = [(1, 0.5, "train/task_loss", task), (2, 1.0, "train/task_loss", task / 2)]
    if kd:
        rows += [(1, 0.5, "train/kd_loss", kd), (2, 1.0, "train/kd_loss", kd / 2)]
    store.log_metrics(run_id, rows)


def test_the_loss_chart_puts_soft_and_hard_terms_on_their_own_axes():
    store = RunStore()
    cfg = jobs.default_config()  # KD, T = 4, alpha = 0.9
    student = store.create_run(cfg.to_dict(), role="student")
    baseline = store.create_run(jobs.baseline_config(cfg).to_dict(), role="baseline")
    _loss_rows(store, student.id, kd=15.0, task=0.2)  # 0.9 * 16 * KL and 0.1 * CE
    _loss_rows(store, baseline.id, kd=0.0, task=2.0)  # the baseline's CE, weight 1
    runs = [store.get(student.id), store.get(baseline.id)]
    fig = distill.loss_figure(distill.metrics_frame(store, runs), runs)
    by_name = {t.name: t for t in fig.data}
    soft = by_name["student: soft term"]
    assert soft.xaxis == "x" and list(soft.y) == [15.0, 7.5]
    hard = by_name["student: cross-entropy"]
    assert hard.xaxis == "x2" and list(hard.y) == pytest.approx([2.0, 1.0])  # 0.2 / (1 - 0.9)
    base = by_name["baseline (hard labels): cross-entropy"]
    assert base.xaxis == "x2" and list(base.y) == [2.0, 1.0]
    assert "baseline (hard labels): soft term" not in by_name
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]  # two panels side by side
    assert "T²" in fig.layout.yaxis.title.text and "cross-entropy" in fig.layout.yaxis2.title.text
    caption = distill.loss_caption(cfg.to_dict())
    assert "T²" in caption and "Hinton" in caption and "0.9 × 16" in caption


def test_a_single_point_is_drawn_with_its_marker():
    store = RunStore()
    run = store.create_run(jobs.default_config().to_dict(), role="student")
    store.log_metrics(run.id, [(1, 0.1, "train/kd_loss", 9.0), (1, 0.1, "train/task_loss", 0.3)])
    fig = distill.loss_figure(distill.metrics_frame(store, [run]), [run])
    assert all("markers" in t.mode for t in fig.data)


def test_a_run_cancelled_before_its_first_step_does_not_promise_curves(teacher):
    store = RunStore()
    cfg = jobs.default_config(teacher, dataset="digits", arch="mlp-30-30")
    run = store.create_run(cfg.to_dict(), name="r", source="app")
    store.finish(run.id, "cancelled", "Cancelled before its process started.")
    at = open_page(DISTILL_PAGE, run_id=run.id)
    captions = [c.value for c in at.caption]
    assert "No curves: the run stopped before its first training step." in captions
    assert not any("appear here" in c for c in captions)
    assert any("Cancelled before" in w.value for w in at.warning)


def test_a_starting_run_shows_its_stage_and_empty_loss_axes(teacher):
    store = RunStore()
    cfg = jobs.default_config(teacher, dataset="digits", arch="mlp-30-30")
    run = store.create_run(cfg.to_dict(), name="r", source="app", pid=os.getpid())
    store.claim_slot(run.id)
    store.update(run.id, message="computing teacher logits 512/1,797 images")
    at = open_page(DISTILL_PAGE, run_id=run.id)
    assert progress_texts(at) == ["Student: stage 4/5: computing teacher logits 512/1,797 images"]
    assert "The curves appear here after the first training steps." in [c.value for c in at.caption]
    assert len(at.get("plotly_chart")) == 1  # the loss axes, drawn before the first point
    store.finish(run.id, "cancelled", "Cancelled at step 0 of 10.")


def test_the_device_and_precision_pickers(monkeypatch):
    import torch

    at = open_page(DISTILL_PAGE)
    devices = distill.device_options()
    picker = at.selectbox(key="distill_device")
    assert picker.options == list(devices.values()) and picker.value == "auto"
    assert f"CPU ({os.cpu_count()} cores)" in picker.options
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        assert f"GPU {i}: {torch.cuda.get_device_name(i)}" in picker.options
    precision = at.selectbox(key="distill_precision")
    assert precision.value == "auto" and len(precision.options) == 4
    assert not at.button(key="distill_start").disabled

    at.selectbox(key="distill_device").set_value("cpu")
    at.selectbox(key="distill_precision").set_value("fp16").run()
    assert [e.value for e in at.error] == [distill.precision_problem("cpu", "fp16")]
    assert "fp16 training needs a CUDA GPU" in at.error[0].value
    assert at.button(key="distill_start").disabled  # refused before Start, not after
    at.selectbox(key="distill_precision").set_value("bf16").run()  # bf16 autocast runs on CPU
    assert not at.error and not at.button(key="distill_start").disabled


def test_a_run_shows_its_images_per_second_running_and_finished():
    store = RunStore()
    cfg = jobs.default_config(dataset="digits", arch="mlp-30-30")
    run = store.create_run(cfg.to_dict(), name="r", source="app", pid=os.getpid())
    store.claim_slot(run.id)
    store.log_metrics(run.id, [(10, 0.5, "train/loss", 1.0)], step=10, total_steps=40, epoch=0.5)
    assert "student: images/s after its first epoch" in distill.speed_line(
        [store.get(run.id)], distill.metrics_frame(store, [store.get(run.id)])
    )
    rows = [(20, 1.0, "train/images_per_s", 4321.2), (20, 1.0, "test/accuracy", 0.5)]
    store.log_metrics(run.id, rows, step=20, total_steps=40, epoch=1.0)
    at = open_page(DISTILL_PAGE, run_id=run.id)
    assert any("student 4,321 images/s" in c.value for c in at.caption)  # running, epoch 1
    store.finish(run.id, "done", "Finished 2 epochs.", metrics={"images_per_s": 5678.4})
    at.run()
    speed = [c.value for c in at.caption if "images/s" in c.value]
    assert speed == ["Training speed (last epoch, evaluation not counted): student 5,678 images/s"]
