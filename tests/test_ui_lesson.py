"""The "Present" page (lesson mode) through Streamlit's AppTest: every step renders its sentence
and its one chart, the step is in the URL, and Back / Next move it."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from kdviz import soft
from kdviz.paths import REPO_ROOT
from kdviz.ui import PAGES, lesson

PAGE = "kdviz/ui/lesson.py"


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def open_step(step: int | None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60)
    at.run()
    if step is not None:
        at.query_params["step"] = str(step)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def figure(at: AppTest) -> dict:
    import json

    return json.loads(charts(at)[0].proto.spec)


def values(y) -> torch.Tensor:
    """A trace's y as sent to the browser: a list, or Plotly's {"dtype", "bdata"} encoding."""
    if isinstance(y, dict):
        raw = base64.b64decode(y["bdata"])
        return torch.from_numpy(np.frombuffer(raw, dtype=np.dtype(y["dtype"])).copy()).double()
    return torch.tensor(y, dtype=torch.float64)


def test_the_page_is_in_the_navigation_and_hides_the_sidebar():
    assert "Present" in [p.title for p in PAGES]
    at = open_step(None)
    assert at.title[0].value.startswith("1/") and at.query_params["step"] == "1"
    styles = " ".join(h.proto.body for h in at.get("html"))
    assert 'section[data-testid="stSidebar"]' in styles and "display: none" in styles


@pytest.mark.parametrize("step", range(1, len(lesson.STEPS) + 1))
def test_each_step_has_its_title_sentence_one_chart_and_its_url(step):
    at = open_step(step)
    spec = lesson.STEPS[step - 1]
    assert at.title[0].value == f"{step}/{len(lesson.STEPS)} · {spec.title}"
    assert spec.sentence in [m.value for m in at.markdown]
    assert at.query_params["step"] == str(step)
    if step != 6:  # the live step draws its chart once a run exists (tested in test_ui_distill)
        assert len(charts(at)) == 1
    else:
        assert not charts(at) and at.button(key="lesson_start").proto.label == "Start the run"


def test_next_and_back_move_the_step_and_the_url():
    at = open_step(1)
    assert at.button(key="lesson_back").disabled
    at.button(key="lesson_next").click().run()
    assert at.query_params["step"] == "2" and at.title[0].value.startswith("2/")
    at.button(key="lesson_next").click().run()
    at.button(key="lesson_back").click().run()
    assert at.query_params["step"] == "2"
    last = open_step(len(lesson.STEPS))
    assert last.button(key="lesson_next").disabled


def test_out_of_range_steps_are_clamped():
    assert open_step(99).title[0].value.startswith(f"{len(lesson.STEPS)}/")
    assert open_step(0).title[0].value.startswith("1/")


def test_the_temperature_slider_softens_the_teachers_bars():
    at = open_step(2)
    data = lesson.lesson_data()
    index = data.images[0]
    at.select_slider(key="lesson_T2").set_value(20.0).run()
    bars = [t for t in figure(at)["data"] if t["type"] == "bar"]
    assert len(bars) == 1  # the teacher alone
    expected = soft.soften(data.teacher[index : index + 1].double(), 20.0)[0]
    torch.testing.assert_close(values(bars[0]["y"]), expected, atol=1e-6, rtol=0)
    assert "T = 20" in figure(at)["layout"]["title"]["text"]


def test_confident_images_are_right_sure_and_rich_in_dark_knowledge():
    data = lesson.lesson_data()
    p1 = soft.soften(data.teacher, 1.0)
    for i in data.images:
        assert int(p1[i].argmax()) == int(data.labels[i]) and float(p1[i].max()) > 0.99
    dark = soft.dark_mass(soft.soften(data.teacher, lesson.LESSON_T), data.labels)
    confident = (p1.argmax(-1) == data.labels) & (p1.max(-1).values > 0.99)
    assert float(dark[data.images[0]]) == pytest.approx(float(dark[confident].max()))


def test_step_five_switches_between_the_distilled_and_the_hard_label_student():
    at = open_step(5)
    assert "distilled" in figure(at)["layout"]["title"]["text"]
    at.segmented_control(key="lesson_student").set_value("hard labels").run()
    assert "hard labels" in figure(at)["layout"]["title"]["text"]


def test_the_omitted_class_student_gets_a_bias_chosen_on_val(tmp_path):
    from kdviz.data import load_dataset
    from kdviz.engine import dataset_logits, fit

    stem = tmp_path / "omit3"
    cfg = lesson.live_config(
        epochs=1,
        arch="mlp-30-30",
        device="cpu",
        omit_classes=(3,),
        out=str(stem),
        transfer_fraction=0.3,
    )
    assert fit(cfg).status == "done"
    models = lesson.omitted_models(str(stem))
    plain, shifted = models.values()
    bias = float((shifted - plain)[:, lesson.OMITTED].mean())
    assert bias > 0 and torch.equal(
        torch.cat([shifted[:, :3], shifted[:, 4:]], 1), torch.cat([plain[:, :3], plain[:, 4:]], 1)
    )
    # the bias makes the student predict a 3 on the val split about as often as 3s occur
    val = dataset_logits(str(stem), "mnist5k", "val")
    val[:, lesson.OMITTED] += bias
    prior = float((load_dataset("mnist5k", "train").labels == 3).float().mean())
    assert float((val.argmax(-1) == 3).float().mean()) == pytest.approx(prior, abs=0.02)


@pytest.mark.slow
@pytest.mark.usefixtures("no_stray_workers")
def test_the_live_steps_start_runs_and_chart_them(monkeypatch):
    import time

    from kdviz.runs import RunStore

    monkeypatch.setattr(lesson, "LIVE_EPOCHS", 1)
    monkeypatch.setattr(lesson, "LIVE_ARCH", "mlp-30-30")
    monkeypatch.setenv("KDVIZ_MAX_RUNS", "2")
    at = open_step(6)
    at.button(key="lesson_start").click().run()
    run_id = at.query_params["lesson_run"]
    store = RunStore()
    deadline = time.monotonic() + 120
    while any(r.active for r in store.group(run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [r.status for r in store.group(run_id)] == ["done", "done"]
    at.run()
    traces = figure(at)["data"]
    assert {t["name"] for t in traces} == {"student", "baseline (hard labels)"}

    at.query_params["step"] = "7"
    at.run()
    at.button(key="lesson_omit_start").click().run()
    omit_id = at.query_params["lesson_omit"]
    while store.get(omit_id).active and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.get(omit_id).config["omit_classes"] == [3]
    at.run()
    names = [t["name"] for t in figure(at)["data"]]
    assert names[0] == "distilled student, all digits" and len(names) == 3
