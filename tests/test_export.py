"""kdviz.export: ONNX export against PyTorch as the oracle, int8 size and agreement, the
kdviz_card metadata, refusals, the compression table's math, the CLI and the Compress page.

Checkpoints are small models trained for a few hundred steps on `digits` (seconds on a CPU).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e.kdviz_tiny import train_briefly

from kdviz import data, export, models, paths
from kdviz.cli import main
from kdviz.errors import KdvizError
from kdviz.stats import wilson_interval

MLP, CNN, SMALL = "t-mlp", "t-cnn", "t-small"
CONTRACT_FIELDS = ("name", "num_classes", "class_names", "in_shape", "mean", "std", "arch")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2 x 256 MLP, a small CNN and a 1 x 16 MLP trained briefly on digits, saved in one folder."""
    folder = tmp_path_factory.mktemp("export_checkpoints")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster on a busy machine
    train = data.load_dataset("digits", "train")
    for name, arch, steps in (
        (MLP, "mlp-256-256", 80),
        (CNN, "cnn-wide", 40),
        (SMALL, "mlp-16", 150),
    ):
        card = models.ModelCard(
            name=name, arch=arch, num_classes=train.num_classes,
            class_names=list(train.class_names), in_shape=list(train.in_shape),
            mean=list(train.mean), std=list(train.std), dataset="digits",
        )  # fmt: skip
        models.save_checkpoint(
            train_briefly(arch, train, steps, seed=len(name)), card, folder / name
        )
    torch.set_num_threads(threads)
    return folder


@pytest.fixture
def ckpts(trained, kdviz_home, tmp_path, monkeypatch) -> Path:
    """The trained checkpoints in this test's KDVIZ_HOME; the shipped ones hidden."""
    empty = tmp_path / "no_pretrained"
    empty.mkdir()
    monkeypatch.setattr(paths, "PRETRAINED_DIR", empty)
    target = paths.checkpoints_dir()
    for file in trained.iterdir():
        shutil.copy2(file, target / file.name)
    return target


def _torch_logits(name: str, dataset: data.Dataset) -> torch.Tensor:
    model, card = models.load_checkpoint(name)
    with torch.inference_mode():
        return model(data.normalize(dataset.images, card.mean, card.std))


# --------------------------------------------------------------------------- fp32 export


@pytest.mark.parametrize("name", [MLP, CNN])
def test_fp32_export_matches_pytorch(ckpts, name):
    test = data.load_dataset("digits", "test")
    result = export.export_onnx(name)
    assert result.path == export.exports_dir() / f"{name}.onnx"
    onnx_out = export.onnx_dataset_logits(result.path, test)
    assert onnx_out.shape == (len(test), 10)
    torch.testing.assert_close(onnx_out, _torch_logits(name, test), atol=1e-4, rtol=1e-4)


def test_ensemble_exports_as_one_graph_with_a_dynamic_batch(ckpts):
    card = models.load_card(MLP)
    card.kind, card.arch, card.members, card.name = "ensemble", "ensemble", [MLP, CNN], "t-ens"
    models.save_ensemble_card(card, ckpts / "t-ens")
    result = export.export_onnx("t-ens")
    test = data.load_dataset("digits", "test")
    images = data.normalize(test.images, card.mean, card.std)
    for n in (1, 7, len(test)):  # the batch axis is dynamic
        torch.testing.assert_close(
            export.onnx_logits(result.path, images[:n]),
            _torch_logits("t-ens", test)[:n],
            atol=1e-4,
            rtol=1e-4,
        )
    assert result.card["source_kind"] == "ensemble"
    assert result.card["source_weights_sha256"] == models.card_fingerprint("t-ens")


def test_metadata_round_trips(ckpts):
    result = export.export_onnx(MLP, precision="int8")
    meta = export.read_onnx_card(result.path)
    assert meta == result.card
    card = models.load_card(MLP)
    for key in CONTRACT_FIELDS:
        assert meta[key] == getattr(card, key), key
    assert meta["precision"] == "int8" and meta["quantization"].startswith("dynamic")
    assert meta["parameters"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert meta["source_weights_sha256"] == models.card_fingerprint(MLP)


# --------------------------------------------------------------------------- int8


def test_int8_mlp_is_small_and_agrees_with_fp32(ckpts):
    test = data.load_dataset("digits", "test")
    fp32 = export.export_onnx(MLP)
    int8 = export.export_onnx(MLP, precision="int8")
    assert int8.path.name == f"{MLP}.int8.onnx"
    assert int8.size_bytes < 0.30 * fp32.size_bytes, (int8.size_bytes, fp32.size_bytes)
    a = export.onnx_dataset_logits(fp32.path, test).argmax(1)
    b = export.onnx_dataset_logits(int8.path, test).argmax(1)
    assert (a == b).float().mean() >= 0.98
    # the quantized graph really runs integer matrix products
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8.path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops, ops


def test_int8_cnn_is_static_and_calibrated_on_its_training_data(ckpts):
    import onnx

    test = data.load_dataset("digits", "test")
    fp32 = export.export_onnx(CNN)
    int8 = export.export_onnx(CNN, precision="int8")
    assert int8.card["quantization"].startswith("static")
    assert int8.card["calibration"] == {"dataset": "digits", "split": "train", "images": 256,
                                        "seed": 0}  # fmt: skip
    ops = [node.op_type for node in onnx.load(str(int8.path)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    a = export.onnx_dataset_logits(fp32.path, test).argmax(1)
    b = export.onnx_dataset_logits(int8.path, test).argmax(1)
    assert (a == b).float().mean() >= 0.95


def test_calibration_images_are_seeded_training_images(ckpts):
    card = models.load_card(CNN)
    first = export.calibration_images(card, "digits", n=16)
    assert np.array_equal(first, export.calibration_images(card, "digits", n=16))
    train = data.load_dataset("digits", "train")
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:16]
    expected = data.normalize(train.images[index], card.mean, card.std).numpy()
    np.testing.assert_array_equal(first, expected)


def test_cached_export_is_reused_until_the_weights_change(ckpts):
    first = export.cached_export(SMALL)
    mtime = first.path.stat().st_mtime_ns
    assert export.cached_export(SMALL).path.stat().st_mtime_ns == mtime
    model, card = models.load_checkpoint(SMALL)
    with torch.no_grad():
        model.head.bias.add_(1.0)
    models.save_checkpoint(model, card, ckpts / SMALL)
    again = export.cached_export(SMALL)
    assert again.card["source_weights_sha256"] == models.card_fingerprint(SMALL)
    assert again.card["source_weights_sha256"] != first.card["source_weights_sha256"]


def test_an_imported_onnx_checkpoint_quantizes_and_is_measured(ckpts, tmp_path):
    from kdviz import importers

    test = data.load_dataset("digits", "test")
    plain = tmp_path / "plain.onnx"  # a graph from elsewhere: fixed batch of 1, no metadata
    model, card = models.load_checkpoint(MLP)
    export._torch_export(model, tuple(card.in_shape), plain, export.OPSET)
    import onnx

    graph = onnx.load(str(plain))
    for value in (*graph.graph.input, *graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(graph, str(plain))
    importers.import_source(plain, "imported", in_shape="1x8x8", mean=card.mean, std=card.std,
                            dataset="digits")  # fmt: skip
    int8 = export.cached_export("imported", "int8")
    assert int8.card["source_kind"] == "onnx" and int8.card["quantization"].startswith("dynamic")
    assert int8.card["parameters"] == export.count_parameters(model)
    row = export.measure_export(int8, test, budget_s=0.01)
    assert row["latency_b1_ms"] > 0 and math.isnan(row["latency_b256_ms"])  # batch fixed at 1
    expected = _torch_logits(MLP, test).argmax(1).numpy()
    assert np.mean(row["predictions"] == expected) >= 0.98


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "content", [b"", b"not an onnx model at all \x00\xff" * 10, b'{"name": "x"}']
)
def test_corrupt_or_non_onnx_file_is_refused_in_one_sentence(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    for call in (export.read_onnx_card, lambda p: export.onnx_logits(p, torch.zeros(1, 1, 8, 8))):
        with pytest.raises(KdvizError) as err:
            call(path)
        text = str(err.value)
        assert "\n" not in text and text.endswith(".") and "not a usable ONNX model" in text


def test_an_architecture_onnx_cannot_express_is_refused(ckpts):
    train = data.load_dataset("digits", "train")
    card = models.ModelCard(
        name="t-lenet", arch="lenet", num_classes=10, in_shape=list(train.in_shape),
        mean=list(train.mean), std=list(train.std), dataset="digits",
    )  # fmt: skip
    models.save_checkpoint(
        models.create_model("lenet", 10, train.in_shape), card, ckpts / "t-lenet"
    )
    with pytest.raises(KdvizError) as err:  # adaptive pooling 2x2 -> 5x5 has no ONNX form
        export.export_onnx("t-lenet")
    assert "cannot export 'lenet'" in str(err.value) and "\n" not in str(err.value)
    assert not list(export.exports_dir().iterdir())  # no partial file left behind


def test_truncated_export_is_refused(ckpts, tmp_path):
    result = export.export_onnx(SMALL)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(result.path.read_bytes()[: result.size_bytes // 2])
    with pytest.raises(KdvizError, match="not a usable ONNX model"):
        export.read_onnx_card(cut)


def test_cli_export(ckpts, tmp_path, capsys):
    out = tmp_path / "mine.onnx"
    assert main(["export", SMALL, "--quantize", "int8", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(out) and out.is_file()
    assert export.read_onnx_card(out)["precision"] == "int8"
    assert main(["export", SMALL]) == 0
    assert (export.exports_dir() / f"{SMALL}.onnx").is_file()
    capsys.readouterr()
    assert main(["export", SMALL, "--out", str(tmp_path / "mine.txt")]) == 2
    assert main(["export", "no-such-checkpoint"]) == 2
    err = capsys.readouterr().err
    assert err.count("kdviz: error:") == 2


def test_export_import_evaluate_round_trip_through_the_cli(ckpts, tmp_path, capsys):
    test = data.load_dataset("digits", "test")

    def evaluate(name: str) -> dict:
        capsys.readouterr()
        assert main(["evaluate", name, "--dataset", "digits", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    direct = evaluate(MLP)
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.onnx"
        args = ["export", MLP, "--out", str(out)] + (["--quantize", "int8"] * (precision == "int8"))
        assert main(args) == 0
        assert main(["import", str(out), "--name", f"back-{precision}"]) == 0  # no flags needed
        back = evaluate(f"back-{precision}")
        stated = export.onnx_dataset_logits(out, test).argmax(1)
        assert back["accuracy"] == pytest.approx(float((stated == test.labels).float().mean()))
        if precision == "fp32":  # the same predictions as the PyTorch model
            assert back["accuracy"] == direct["accuracy"]
            assert back["nll"] == pytest.approx(direct["nll"], rel=1e-4)
        else:  # within a few images of it
            assert abs(back["accuracy"] - direct["accuracy"]) <= 3 / len(test)


def test_cli_import_refuses_a_corrupt_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    assert main(["import", str(bad), "--name", "bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdviz: error:") and "\n" not in err and "ONNX" in err


# --------------------------------------------------------------------------- the table's math


def test_pareto_mask_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        cost = rng.integers(1, 6, size=8).astype(float).tolist()
        acc = rng.integers(1, 6, size=8).astype(float).tolist()
        expected = [
            not any(
                cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j], acc[j]) != (cost[i], acc[i])
                for j in range(8)
            )
            for i in range(8)
        ]
        assert export.pareto_mask(cost, acc) == expected
    assert export.pareto_mask([1.0, math.nan], [0.5, 0.9]) == [True, False]


def test_compress_frame_accuracy_interval_and_agreement():
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    preds = np.array([0, 1, 2, 3, 0, 1, 2, 0, 0, 0])  # 8 of 10 right
    teacher = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 0])  # agrees on 9
    row = {"model": "m", "precision": "fp32", "parameters": 5, "size_bytes": 2_000_000,
           "latency_b1_ms": 1.0, "latency_b256_ms": 9.0, "predictions": preds}  # fmt: skip
    frame = export.compress_frame([row], labels, teacher)
    got = frame.iloc[0]
    assert got["accuracy"] == pytest.approx(0.8) and got["agreement"] == pytest.approx(0.9)
    assert (got["accuracy_low"], got["accuracy_high"]) == pytest.approx(wilson_interval(8, 10))
    assert got["size_mb"] == pytest.approx(2.0) and got["n"] == 10


def test_summary_sentence():
    teacher = {"model": "T", "precision": "fp32", "size_bytes": 4e6, "latency_b1_ms": 2.0,
               "accuracy": 0.992}  # fmt: skip
    student = {"model": "S", "precision": "int8", "size_bytes": 1e6, "latency_b1_ms": 0.05,
               "accuracy": 0.974}  # fmt: skip
    assert export.summary_sentence(teacher, student) == (
        "The student (S, int8) is 4.0x smaller and 40x faster at batch 1 than the teacher "
        "(T, fp32), at 1.8 points less accuracy (97.4% vs 99.2%)."
    )
    bigger = {**student, "size_bytes": 6e6, "latency_b1_ms": 4.0, "accuracy": 0.992}
    assert "1.5x larger and 2.0x slower" in export.summary_sentence(teacher, bigger)
    assert "at the same accuracy" in export.summary_sentence(teacher, bigger)


def test_median_latency_counts_runs(monkeypatch):
    calls = []
    ticks = iter(range(10_000))
    monkeypatch.setattr(export.time, "perf_counter", lambda: float(next(ticks)))
    median = export.median_latency(lambda: calls.append(1), min_runs=5, max_runs=7, budget_s=1e9,
                                   warmup=2)  # fmt: skip
    assert len(calls) == 2 + 7  # warmup, then max_runs (the budget is never reached)
    assert median == 1.0  # each timed call spans exactly one tick of the fake clock


def test_latency_and_measure_export(ckpts):
    result = export.export_onnx(SMALL)
    seconds = export.onnx_latency(result.path, 4, budget_s=0.01)
    assert 0 < seconds < 1
    test = data.load_dataset("digits", "test")
    row = export.measure_export(result, test, batches=(1,), budget_s=0.01)
    assert row["latency_b1_ms"] > 0 and math.isnan(row["latency_b256_ms"])
    expected = _torch_logits(SMALL, test).argmax(1).numpy()
    assert np.mean(row["predictions"] == expected) >= 0.99  # fp32 export: the same classes
    assert "cores" in export.machine_description()


# --------------------------------------------------------------------------- the Compress page

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _decode_chart(chart) -> dict:
    from test_ui import _decode

    return _decode(json.loads(chart.proto.spec))


def test_compress_page_table_and_pareto(ckpts):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from kdviz import engine

    TEACHER, STUDENT = MLP, SMALL  # noqa: N806
    for suffix in (".json", ".safetensors"):  # a checkpoint besides the pair, for the button
        shutil.copy2(ckpts / f"{SMALL}{suffix}", ckpts / f"t-other{suffix}")
    (ckpts / f"{CNN}.json").unlink()  # keeps the test quick: no static int8 calibration
    st.cache_data.clear()
    st.cache_resource.clear()
    threads = torch.get_num_threads()
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        for key, value in {"dataset": "digits", "teacher": TEACHER, "student": STUDENT}.items():
            at.query_params[key] = value
        at.run()
        at.switch_page("kdviz/ui/compress.py").run()
        assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]

        table = at.dataframe[0].value
        files = ["teacher · fp32", "teacher · int8", "student · fp32", "student · int8"]
        assert table["file"].tolist() == files
        labels = data.load_dataset("digits", "test").labels
        teacher = engine.dataset_logits(TEACHER, "digits", "test").argmax(1)
        student = engine.dataset_logits(STUDENT, "digits", "test").argmax(1)

        def percent(hits: torch.Tensor) -> float:
            return 100 * float(hits.float().mean())

        tie = 150 / len(labels)  # fp32 ONNX files: the PyTorch models' figures, ties aside
        assert table["accuracy"][0] == pytest.approx(percent(teacher == labels), abs=tie)
        assert table["accuracy"][2] == pytest.approx(percent(student == labels), abs=tie)
        assert table["agreement"][2] == pytest.approx(percent(student == teacher), abs=tie)
        assert (table["latency_b1_ms"] > 0).all() and (table["latency_b256_ms"] > 0).all()
        assert table["size_mb"][1] < table["size_mb"][0]  # int8 is smaller
        text = " ".join(m.value for m in at.markdown)
        assert f"than the teacher ({TEACHER}, fp32)" in text and "Quantized to int8" in text

        chart = _decode_chart(at.get("plotly_chart")[0])
        names = {t["name"] for t in chart["data"]}
        assert {"teacher fp32", "student int8", "Pareto front"} <= names
        assert not any(n.startswith("other") for n in names)
        at.button(key="compress_measure_all").click().run()
        assert not at.exception and not at.error
        chart = _decode_chart(at.get("plotly_chart")[0])
        others = [t for t in chart["data"] if t["name"].startswith("other")]
        assert sum(len(t["x"]) for t in others) == 2  # t-other in fp32 and int8
        assert (export.exports_dir() / "t-other.int8.onnx").is_file()
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
        torch.set_num_threads(threads)
