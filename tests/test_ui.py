"""The explorer, driven with Streamlit's AppTest: every page, the temperature, samples, classes,
pairs and the URL. Assertions look at the charts' data, not only at the absence of exceptions.

Checkpoints are two tiny MLPs trained for a few steps on `digits` (tests/e2e/kdviz_tiny.py); the
shipped ones are hidden by pointing PRETRAINED_DIR at an empty folder.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from e2e.kdviz_tiny import STUDENT, TEACHER
from streamlit.testing.v1 import AppTest

from kdviz import analysis, data, engine, paths, soft
from kdviz.ui import PAGES, shell

APP = str(Path(__file__).resolve().parent.parent / "app.py")
VIEW = {"dataset": "digits", "teacher": TEACHER, "student": STUDENT}


def _app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    return at


def _open(**params) -> AppTest:
    at = _app(**{**VIEW, **params}).run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _decode(value):
    """Plotly JSON with its base64 typed arrays ({"dtype", "bdata"}) turned into lists."""
    if isinstance(value, dict):
        if "bdata" in value and set(value) <= {"dtype", "bdata", "shape"}:
            array = np.frombuffer(
                base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<")
            )
            if "shape" in value:
                array = array.reshape([int(d) for d in str(value["shape"]).split(",")])
            return array.tolist()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _charts(at: AppTest) -> dict[str, dict]:
    """key -> the chart's Plotly spec (decoded)."""
    return {c.key: _decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart")}


def _chart(at: AppTest, key: str) -> dict:
    charts = _charts(at)
    assert key in charts, f"no chart {key!r}; charts: {sorted(charts)}"
    return charts[key]


def _trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def _logits(name: str, split: str = "test") -> torch.Tensor:
    return engine.dataset_logits(paths.checkpoints_dir() / name, "digits", split)


def _labels(split: str = "test") -> torch.Tensor:
    return data.load_dataset("digits", split).labels


# --------------------------------------------------------------------------- shell


def test_pages_are_registered_and_exist():
    files = [spec.file for spec in PAGES]
    assert files[:3] == ["soft_targets.py", "class_similarity.py", "teacher_student.py"]
    for spec in PAGES:
        assert spec.path.is_file(), spec.path
    assert len({spec.url_path for spec in PAGES}) == len(PAGES)


def test_no_checkpoint_says_how_to_make_one(kdviz_home, tmp_path, monkeypatch):
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setattr(paths, "PRETRAINED_DIR", empty)
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    text = " ".join(i.value for i in at.info)
    assert "make pretrained" in text and "kdviz train" in text
    assert at.select_slider(key="T").value == shell.DEFAULT_T  # the sidebar still works
    for page in ("kdviz/ui/class_similarity.py", "kdviz/ui/teacher_student.py"):
        at.switch_page(page).run()
        assert not at.exception and "make pretrained" in " ".join(i.value for i in at.info)
    st.cache_resource.clear()


def test_default_view_picks_matching_checkpoints(home):
    at = _app(dataset="digits").run()
    _ok(at)
    assert at.selectbox(key="teacher").value == TEACHER  # "teacher" in the name
    assert at.selectbox(key="student").value == STUDENT
    assert at.selectbox(key="split").value == "test"
    assert at.select_slider(key="T").value == 4.0  # the dark knowledge shows at once


def test_temperature_slider_is_log_scale_from_quarter_to_hundred(home):
    at = _open()
    slider = at.select_slider(key="T")
    assert slider.label == "Temperature"
    options = [float(o) for o in slider.options]
    assert options[0] == 0.25 and options[-1] == 100 and 1.0 in options
    ratios = np.diff(np.log10(options))
    assert ratios.max() < 0.13 and ratios.min() > 0.07  # even steps in log T


# --------------------------------------------------------------------------- soft targets


def test_soft_targets_bars_follow_the_temperature(home):
    at = _open()
    teacher, student = _logits(TEACHER), _logits(STUDENT)
    for t in (1.0, 4.0, 20.0):
        at.select_slider(key="T").set_value(t).run()
        _ok(at)
        bars = _chart(at, "soft_bars")
        label = analysis.format_temperature(t)
        assert f"T = {label}" in bars["layout"]["title"]["text"]
        t_bar = _trace(bars, f"Teacher, T = {label}")
        np.testing.assert_allclose(t_bar["y"], soft.soften(teacher[0], t).numpy(), rtol=1e-5)
        s_bar = _trace(bars, f"Student, T = {label}")
        np.testing.assert_allclose(s_bar["y"], soft.soften(student[0], t).numpy(), rtol=1e-5)
        ref = _trace(bars, "Teacher, T = 1")
        np.testing.assert_allclose(ref["y"], soft.soften(teacher[0], 1.0).numpy(), rtol=1e-5)
        assert t_bar["x"] == list(data.load_dataset("digits", "test").class_names)


def test_curves_mark_the_current_temperature(home):
    at = _open(T="8")
    curves = _chart(at, "soft_curves")
    assert len(curves["data"]) == 10 and curves["layout"]["xaxis"]["type"] == "log"
    marks = [s for s in curves["layout"]["shapes"] if s.get("name") == "temperature"]
    assert marks[0]["x0"] == 8.0
    teacher = _logits(TEACHER)
    line = _trace(curves, "3")
    at_eight = line["x"].index(8.0)
    assert line["y"][at_eight] == pytest.approx(float(soft.soften(teacher[0], 8.0)[3]), rel=1e-5)
    softness = _chart(at, "soft_entropy")
    entropy = _trace(softness, "Teacher entropy")
    assert entropy["y"][-1] <= math.log(10) + 1e-9 and entropy["y"][0] < entropy["y"][-1]
    at.select_slider(key="T").set_value(2.0).run()
    marks = [
        s for s in _chart(at, "soft_curves")["layout"]["shapes"] if s.get("name") == "temperature"
    ]
    assert marks[0]["x0"] == 2.0
    at.segmented_control(key="curves").set_value("student").run()
    assert "Student" in _chart(at, "soft_curves")["layout"]["title"]["text"]


def test_back_to_t_equals_one(home):
    at = _open(T="16")
    assert at.select_slider(key="T").value == 16.0
    button = at.button(key="reset_T")
    assert button.label == "Back to T = 1" and not button.disabled
    button.click().run()
    _ok(at)
    assert at.select_slider(key="T").value == 1.0
    assert at.button(key="reset_T").disabled


def test_url_opens_the_same_view(home):
    at = _open(T="4", image="7", scale="log", gallery="Teacher is wrong")
    assert at.select_slider(key="T").value == 4.0
    assert at.number_input(key="image").value == 7
    assert at.segmented_control(key="scale").value == "log"
    assert at.segmented_control(key="gallery").value == "wrong"
    bars = _chart(at, "soft_bars")
    assert bars["layout"]["yaxis"]["type"] == "log"
    assert "Image #7" in bars["layout"]["title"]["text"]
    np.testing.assert_allclose(
        _trace(bars, "Teacher, T = 4")["y"],
        soft.soften(_logits(TEACHER)[7], 4.0).numpy(),
        rtol=1e-5,
    )


def test_picking_an_image_updates_the_charts(home):
    at = _open(T="2")
    at.number_input(key="image").set_value(42).run()
    _ok(at)
    bars = _chart(at, "soft_bars")
    np.testing.assert_allclose(
        _trace(bars, "Teacher, T = 2")["y"],
        soft.soften(_logits(TEACHER)[42], 2.0).numpy(),
        rtol=1e-5,
    )
    strip = _chart(at, "gallery_strip")
    assert [s["type"] for s in strip["layout"].get("shapes", [])] in ([], ["rect"])


@pytest.mark.parametrize("mode", list(analysis.GALLERY_MODES))
def test_gallery_modes_pick_the_right_images(home, mode):
    at = _open(T="4")
    at.segmented_control(key="gallery").set_value(mode).run()
    _ok(at)
    teacher, student, labels = _logits(TEACHER), _logits(STUDENT), _labels()
    expected = analysis.gallery_indices(
        mode, labels, teacher, student, 4.0, n=12, class_index=0, seed=0
    )
    if len(expected) == 0:
        assert at.info
        return
    pick = _trace(_chart(at, "gallery_strip"), "pick")
    assert pick["customdata"] == expected.tolist()
    shown = torch.tensor(pick["customdata"])
    if mode == "wrong":
        assert (teacher[shown].argmax(-1) != labels[shown]).all()
    if mode == "disagree":
        assert (teacher[shown].argmax(-1) != student[shown].argmax(-1)).all()


def test_gallery_by_class_and_shuffle(home):
    at = _open(gallery="By class")
    at.selectbox(key="class").select("3").run()
    _ok(at)
    labels = _labels()
    first = _trace(_chart(at, "gallery_strip"), "pick")["customdata"]
    assert len(first) == 12 and all(int(labels[i]) == 3 for i in first)
    at.button(key="gallery_shuffle").click().run()
    second = _trace(_chart(at, "gallery_strip"), "pick")["customdata"]
    assert second != first and all(int(labels[i]) == 3 for i in second)


def test_soft_targets_tabs(home):
    at = _open(T="4")
    at.session_state["tab"] = "Class means at T"
    at.run()
    _ok(at)
    means = _chart(at, "class_means_teacher")
    heat = _trace(means, "matrix")
    expected = analysis.similarity_matrix(
        _logits(TEACHER), _labels(), 4.0, data.load_dataset("digits", "test").class_names
    )
    assert heat["customdata"][0][1] == pytest.approx(expected.iloc[0, 1], rel=1e-5)
    diagonal = heat["customdata"][0][0]  # shown apart: a gap (NaN, or null in plain JSON)
    assert diagonal is None or math.isnan(diagonal)
    assert _trace(means, "diagonal")["z"][0][0] == pytest.approx(expected.iloc[0, 0], rel=1e-5)
    at.session_state["tab"] = "Animate T in the browser"
    at.run()
    _ok(at)
    animation = _chart(at, "soft_animation")
    assert len(animation["frames"]) == len(analysis.TEMPERATURE_GRID)
    slider = animation["layout"]["sliders"][0]
    assert slider["steps"][slider["active"]]["label"] == "4"


# --------------------------------------------------------------------------- class similarity


def _similarity(at: AppTest) -> AppTest:
    at.switch_page("kdviz/ui/class_similarity.py").run()
    _ok(at)
    return at


def test_class_similarity_matrix_and_clustering(home):
    at = _similarity(_open(T="4"))
    names = data.load_dataset("digits", "test").class_names
    matrix = analysis.similarity_matrix(_logits(TEACHER), _labels(), 4.0, names)
    order, _ = analysis.cluster_order(matrix)
    spec = _chart(at, "sim_cell")
    heat = _trace(spec, "matrix")
    assert heat["x"] == order and heat["y"] == order
    i, j = order.index("3"), order.index("8")
    assert heat["customdata"][i][j] == pytest.approx(matrix.loc["3", "8"], rel=1e-5)
    assert _trace(spec, "dendrogram")["x"]
    confusion = _trace(_chart(at, "sim_confusion"), "matrix")
    counts = np.nan_to_num(np.array(confusion["z"], dtype=float)).sum() + np.nansum(
        np.array(_trace(_chart(at, "sim_confusion"), "diagonal")["z"], dtype=float)
    )
    assert counts == len(_labels())
    at.select_slider(key="T").set_value(0.25).run()
    cold = _trace(_chart(at, "sim_cell"), "matrix")
    cold_matrix = analysis.similarity_matrix(_logits(TEACHER), _labels(), 0.25, names)
    assert cold["x"] == analysis.cluster_order(cold_matrix)[0]  # re-clustered at the new T


def test_class_similarity_pair_picker_shows_linking_images(home):
    at = _similarity(_open(T="4"))
    at.selectbox(key="row").select("1").run()
    at.selectbox(key="col").select("7").run()
    _ok(at)
    teacher, labels = _logits(TEACHER), _labels()
    expected = analysis.pair_images(teacher, labels, 4.0, 1, 7, n=12)
    pick = _trace(_chart(at, "pair_1_7"), "pick")
    assert pick["customdata"] == expected["index"].tolist()
    assert all(int(labels[i]) == 1 for i in pick["customdata"])
    back = _trace(_chart(at, "pair_7_1"), "pick")
    assert all(int(labels[i]) == 7 for i in back["customdata"])
    outline = _chart(at, "sim_cell")["layout"]["shapes"][0]
    order = _trace(_chart(at, "sim_cell"), "matrix")["x"]
    assert outline["x0"] == order.index("7") - 0.5 and outline["y0"] == order.index("1") - 0.5


def test_class_similarity_pair_from_url(home):
    at = _similarity(_open(T="4", row="2", col="8"))
    assert at.selectbox(key="row").value == "2" and at.selectbox(key="col").value == "8"
    assert "pair_2_8" in _charts(at)


def test_class_similarity_tabs(home):
    at = _similarity(_open(T="4"))
    charts = _charts(at)
    student = _trace(charts["sim_student"], "matrix")
    diff = _trace(charts["sim_difference"], "matrix")
    names = data.load_dataset("digits", "test").class_names
    t_matrix = analysis.similarity_matrix(_logits(TEACHER), _labels(), 4.0, names)
    s_matrix = analysis.similarity_matrix(_logits(STUDENT), _labels(), 4.0, names)
    a, b = diff["y"][0], diff["x"][1]
    assert diff["z"][0][1] == pytest.approx(
        t_matrix.loc[a, b] - s_matrix.loc[a, b], rel=1e-4, abs=1e-7
    )
    assert sorted(student["x"]) == sorted(names)
    at.session_state["sim_tab"] = "Similarity graph"
    at.run()
    at.slider(key="links").set_value(5).run()
    _ok(at)
    graph = _chart(at, "sim_graph")
    edges = [t for t in graph["data"] if t.get("mode") == "lines"]
    assert len(edges) == 5
    strongest = analysis.similarity_links(t_matrix, top_k=1).iloc[0]
    assert f"{strongest.source} ↔ {strongest.target}" in _trace(graph, "links")["text"][0]
    at.session_state["sim_tab"] = "Soft-target map"
    at.run()
    _ok(at)
    points = _chart(at, "sim_map")["data"]
    assert sum(len(t["x"]) for t in points) == len(_labels())  # 359 < the 2,000 cap
    assert {t["name"] for t in points} == set(names)


# --------------------------------------------------------------------------- teacher vs student


def _teacher_student(at: AppTest) -> AppTest:
    at.switch_page("kdviz/ui/teacher_student.py").run()
    _ok(at)
    return at


def test_teacher_student_measures(home):
    at = _teacher_student(_open(T="4"))
    teacher, student, labels = _logits(TEACHER), _logits(STUDENT), _labels()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Teacher accuracy"] == f"{100 * soft.accuracy(teacher, labels):.2f}%"
    assert metrics["Top-1 agreement"] == f"{100 * soft.agreement(teacher, student):.2f}%"
    kl = float(soft.kl_divergence(teacher, student, 4.0).mean())
    assert metrics["KL(teacher ‖ student), T = 4"] == f"{kl:.4f}"
    table = at.dataframe[0].value
    assert table.loc["NLL", "Student"] == f"{soft.nll(student, labels):.4f}"
    assert table.loc["ECE (15 bins)", "Teacher"] == f"{100 * soft.ece(teacher, labels):.2f}%"
    assert (
        table.loc["Calibration temperature T*", "Student"]
        == f"{soft.calibration_temperature(student, labels):.2f}"
    )
    reliability = _chart(at, "ts_reliability")
    bins = soft.reliability_bins(student, labels)
    acc = _trace(reliability, "Student: accuracy")["y"]
    np.testing.assert_allclose(np.array(acc, dtype=float), bins["accuracy"].numpy(), rtol=1e-6)
    before = " ".join(a["text"] for a in reliability["layout"]["annotations"])
    at.toggle(key="calibrated").set_value(True).run()
    _ok(at)
    after = " ".join(a["text"] for a in _chart(at, "ts_reliability")["layout"]["annotations"])
    assert before != after
    t_star = soft.calibration_temperature(student, labels)
    assert f"{100 * soft.ece(student / t_star, labels):.2f}%" in after


def test_teacher_student_says_how_sure_the_accuracies_are(home):
    at = _teacher_student(_open(T="4"))
    teacher, student, labels = _logits(TEACHER), _logits(STUDENT), _labels()
    n = len(labels)

    def wilson(k: int) -> str:  # Wilson 1927, written out independently of kdviz.stats
        p, z = k / n, 1.959963984540054
        mid, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)
        return f"{100 * k / n:.1f}% ({100 * low:.1f}–{100 * high:.1f})"

    k_teacher = int((teacher.argmax(1) == labels).sum())
    k_student = int((student.argmax(1) == labels).sum())
    sentence = next(c.value for c in at.caption if "Wilson" in c.value)
    assert f"teacher {wilson(k_teacher)}, student {wilson(k_student)}" in sentence
    assert f"{100 * (k_student - k_teacher) / n:+.1f} pts (95% CI" in sentence
    assert ("within noise" in sentence) or ("beyond noise" in sentence)


def test_teacher_student_dkd_per_class_and_disagreements(home):
    at = _teacher_student(_open(T="4"))
    teacher, student, labels = _logits(TEACHER), _logits(STUDENT), _labels()
    dkd = _chart(at, "ts_dkd")
    tckd = np.array(_trace(dkd, "TCKD (target vs the rest)")["y"], dtype=float)
    weighted = np.array(dkd["data"][1]["y"], dtype=float)
    parts = soft.dkd_parts(teacher, student, labels, 4.0)
    kd = np.array([float(parts["kd"][labels == c].mean()) for c in range(10)])
    np.testing.assert_allclose(tckd + weighted, kd, rtol=1e-4)  # KD = TCKD + (1 - p_t) NCKD
    at.session_state["ts_tab"] = "Per class"
    at.run()
    _ok(at)
    per_class = at.dataframe[-1].value
    assert len(per_class) == 10 and per_class["images"].sum() == len(labels)
    at.session_state["ts_tab"] = "Disagreements"
    at.run()
    _ok(at)
    shown = [
        i
        for key, spec in _charts(at).items()
        if key.startswith("ts_disagree")
        for i in _trace(spec, "pick")["customdata"]
    ]
    differ = set(torch.nonzero(teacher.argmax(-1) != student.argmax(-1)).reshape(-1).tolist())
    assert shown and set(shown) <= differ
    assert len(shown) == min(24, len(differ))


def test_disagreement_click_opens_the_image_in_soft_targets(home):
    at = _teacher_student(_open())
    at.session_state["_open_image"] = 11  # what a click on a thumbnail stores
    at.run()
    _ok(at)
    assert at.number_input(key="image").value == 11
    assert "Image #11" in _chart(at, "soft_bars")["layout"]["title"]["text"]


# --------------------------------------------------------------------------- errors


def test_checkpoint_that_does_not_fit_the_dataset(home):
    at = _app(dataset="mnist5k", teacher=TEACHER, student=STUDENT).run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "does not fit mnist5k (test): input 1×8×8 vs 1×28×28" in message
    assert at.select_slider(key="T") is not None  # the rest of the app keeps working
    at.selectbox(key="dataset").select("digits").run()
    _ok(at)
    assert "soft_bars" in _charts(at)


def test_missing_or_corrupt_checkpoint(home):
    at = _app(dataset="digits", teacher="no-such-model", student=STUDENT).run()
    assert not at.exception
    assert any("no-such-model" in w.value for w in at.warning)
    assert at.selectbox(key="teacher").value == TEACHER  # fell back to the default
    weights = paths.checkpoints_dir() / f"{STUDENT}.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    st.cache_resource.clear()
    at = _app(**VIEW).run()
    assert not at.exception
    assert any("truncated" in e.value or "safetensors" in e.value for e in at.error)


def test_empty_folder_dataset_and_unknown_dataset(home, tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    at = _app(dataset=f"folder:{empty}").run()
    assert not at.exception and at.error
    at = _app(dataset="no-such-data").run()
    assert not at.exception
    assert "Unknown dataset" in " ".join(e.value for e in at.error)
    at.switch_page("kdviz/ui/class_similarity.py").run()
    assert not at.exception and at.error  # each page says it, none crashes


def test_custom_dataset_spec_from_the_sidebar(home, tmp_path):
    at = _open()
    at.text_input(key="dataset_custom").input(f"folder:{tmp_path}").run()
    assert at.selectbox(key="dataset").value == f"folder:{tmp_path}"
    assert not at.exception and at.error


def test_dataset_not_on_disk_offers_a_download(home):
    at = _app(dataset="kmnist").run()
    assert not at.exception
    assert "not in the data folder" in " ".join(e.value for e in at.error)
    assert at.button(key="download_dataset").label.startswith("Download kmnist")


# --------------------------------------------------------------------------- many classes


MANY = 200  # classes of the imported logits tables: the explorer's many-class layout


@pytest.fixture
def many_classes(home, tmp_path):
    """Teacher and student logits tables of 1,000 images of 200 classes in groups of 10 alike
    classes, imported as "many-t" and "many-s"; the view is logits:many-t."""
    from kdviz import importers, scale

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(1000) % MANY
    group = (torch.arange(MANY)[:, None] // 10 == torch.arange(MANY)[None, :] // 10).float()
    teacher = (
        torch.randn(1000, MANY, generator=gen) + 3 * group[labels] + 5 * torch.eye(MANY)[labels]
    )
    student = teacher + 1.5 * torch.randn(1000, MANY, generator=gen)
    names = np.array([f"c{i:03d}" for i in range(MANY)])
    for name, logits in (("many-t", teacher), ("many-s", student)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, logits=logits.numpy(), labels=labels.numpy(), class_names=names)
        importers.import_source(path, name)
    yield teacher, student, labels, [str(n) for n in names]
    scale.stop_all()  # no background sweep outlives the test


def _ticks_at_most(at: AppTest, most: int = 60) -> None:
    for key, spec in _charts(at).items():
        for trace in spec["data"]:
            if trace.get("type") == "heatmap":
                assert len(trace.get("x") or []) <= most and len(trace.get("y") or []) <= most, key


def test_soft_targets_at_many_classes_show_top_k_and_the_rest(many_classes):
    teacher, student, labels, names = many_classes
    at = _app(dataset="logits:many-t", teacher="many-t", student="many-s", T="4", image="7").run()
    _ok(at)
    bars = _chart(at, "soft_bars")
    t_bar = _trace(bars, "Teacher, T = 4")
    assert len(t_bar["x"]) == 11 and t_bar["x"][-1] == f"the rest ({MANY - 10} classes)"
    top = torch.topk(teacher[7], 10).indices.tolist()
    expected = top if int(labels[7]) in top else [*top[:9], int(labels[7])]
    assert t_bar["x"][:10] == [names[i] for i in expected]
    p = soft.soften(teacher[7].double(), 4.0).numpy()
    np.testing.assert_allclose(t_bar["y"][:10], p[expected], rtol=1e-5)
    assert t_bar["y"][10] == pytest.approx(1 - p[expected].sum(), abs=1e-6)
    s_bar = _trace(bars, "Student, T = 4")
    assert s_bar["x"] == t_bar["x"]  # the same classes for both models
    assert len(_chart(at, "soft_curves")["data"]) <= 7
    at.session_state["tab"] = "Class means at T"
    at.run()
    _ok(at)
    _ticks_at_most(at, 11)
    assert "without images" in " ".join(c.value for c in at.caption)


def test_class_similarity_at_many_classes_searches_and_zooms(many_classes):
    teacher, student, labels, names = many_classes
    at = _app(dataset="logits:many-t", teacher="many-t", student="many-s", T="4").run()
    at.switch_page("kdviz/ui/class_similarity.py").run()
    _ok(at)
    _ticks_at_most(at)
    at.selectbox(key="row").set_value("c123").run()
    _ok(at)
    matrix = soft.class_similarity(soft.soften(teacher.double(), 4.0), labels, MANY).numpy()
    row = matrix[123].copy()
    row[123] = -np.inf
    nearest = at.dataframe[0].value  # the nearest-classes table
    assert list(nearest["class"]) == [names[i] for i in np.argsort(-row, kind="stable")[:10]]
    assert {int(c[1:]) // 10 for c in nearest["class"][:9]} == {12}  # its 9 group mates first
    tile = _trace(_chart(at, "sim_cell"), "matrix")
    assert "c123" in tile["y"] and len(tile["x"]) == 25  # the tile moved to c123's block
    i, other = tile["y"].index("c123"), tile["x"][0]
    expected = matrix[123, names.index(other)]
    assert tile["customdata"][i][0] == pytest.approx(expected, rel=1e-4) or other == "c123"
    overview = _trace(_chart(at, "sim_blocks"), "matrix")
    assert len(overview["x"]) == MANY // 25
    rows = tile["y"]
    seen = []
    for block in range(MANY // 25):  # the column blocks partition the clustered order
        at.selectbox(key="tile_cols").set_value(block).run()
        _ok(at)
        step = _trace(_chart(at, "sim_cell"), "matrix")
        assert step["y"] == rows and len(step["x"]) == 25
        seen += step["x"]
    assert sorted(seen) == names
    _ticks_at_most(at)
    for tab in ("Similarity graph", "Soft-target map"):
        at.session_state["sim_tab"] = tab
        at.run()
        _ok(at)
    points = _chart(at, "sim_map")["data"]
    assert len(points) == 11  # the chosen class and its 10 nearest


def test_switching_from_many_classes_to_few_keeps_every_page_working(many_classes):
    at = _app(dataset="logits:many-t", teacher="many-t", student="many-s", T="4").run()
    at.switch_page("kdviz/ui/class_similarity.py").run()
    at.selectbox(key="row").set_value("c150").run()
    _ok(at)
    at.selectbox(key="dataset").set_value("digits").run()
    _ok(at)
    assert len(_trace(_chart(at, "sim_cell"), "matrix")["x"]) == 10  # the whole 10 x 10 matrix
    assert at.selectbox(key="row").value in data.load_dataset("digits", "test").class_names
