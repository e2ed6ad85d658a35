"""kdviz.importers: logits tables, foreign state dicts and ONNX models, checked against direct
computation in numpy / PyTorch / onnxruntime on files the tests write themselves."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from kdviz import importers, logit_tables, models, paths
from kdviz.data import load_dataset
from kdviz.engine import DistillConfig, dataset_logits, distill, evaluate
from kdviz.errors import KdvizError


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg and msg.endswith("."), msg
    return msg


def _logits(n: int = 50, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)).astype(np.float32) * 3, rng.integers(0, c, size=n)


def _resnet18_1ch(seed: int = 0) -> nn.Module:
    """torchvision resnet18 with the MNIST recipe's 1-channel conv1, random non-trivial BN stats."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 2)  # (N, 8, 2, 2)
        return self.head(x.flatten(1))  # (N, K)


def _export_onnx(
    model: nn.Module, path: Path, shape: tuple[int, ...], dynamic: bool = True
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(*shape),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}} if dynamic else None,
        )
    return path


# ---------------------------------------------------------------------------- logits tables


def test_npz_npy_csv_parquet_pt_read_the_same_table(tmp_path):
    logits, labels = _logits()
    names = ["cat", "dog", "eel", "fox"]
    np.savez(tmp_path / "t.npz", logits=logits, labels=labels, class_names=np.array(names))
    np.save(tmp_path / "t.npy", logits)
    frame = pd.DataFrame(logits, columns=names).assign(label=labels)
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    torch.save(
        {
            "logits": torch.from_numpy(logits),
            "labels": torch.from_numpy(labels),
            "class_names": names,
        },
        tmp_path / "t.pt",
    )
    for suffix in ("npz", "csv", "parquet", "pt"):
        table = importers.read_logits_file(tmp_path / f"t.{suffix}")
        np.testing.assert_allclose(table.logits.numpy(), logits, rtol=1e-6)
        assert table.labels.dtype == torch.int64 and table.labels.tolist() == labels.tolist()
        assert table.class_names == tuple(names), suffix
    bare = importers.read_logits_file(tmp_path / "t.npy")
    assert bare.labels is None and bare.class_names == ("0", "1", "2", "3")
    np.testing.assert_array_equal(bare.logits.numpy(), logits)


@pytest.mark.parametrize(
    ("logits", "labels", "names", "needle"),
    [
        (np.zeros((3, 4, 2)), None, None, "not (rows, classes)"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), None, None, "NaN or infinite"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), None, None, "first in row 0"),
        (np.zeros((3, 4)), np.array([0, 1, 4]), None, "label 4 in row 2"),
        (np.zeros((3, 4)), np.array([0, -1, 1]), None, "outside 0..3"),
        (np.zeros((3, 4)), np.array([0, 1]), None, "one label per row"),
        (np.zeros((3, 4)), None, ["a", "b"], "names 2 classes"),
        (np.array([["a", "b"]]), None, None, "not numbers"),
    ],
)
def test_bad_tables_are_one_sentence(logits, labels, names, needle):
    with pytest.raises(KdvizError) as err:
        importers.make_logits_table(logits, labels, names, source="x.npz")
    assert needle in _one_sentence(err)


def test_absurd_size_is_refused(tmp_path, monkeypatch):
    logits, _ = _logits(n=30, c=4)
    np.save(tmp_path / "big.npy", logits)
    np.savez(tmp_path / "big.npz", logits=logits)
    monkeypatch.setattr(logit_tables, "MAX_VALUES", 100)
    for name in ("big.npy", "big.npz"):
        with pytest.raises(KdvizError) as err:
            importers.read_logits_file(tmp_path / name)
        assert "more than the limit of 100" in _one_sentence(err)


def test_csv_with_text_column_and_npz_without_logits(tmp_path):
    pd.DataFrame({"a": [1.0], "b": [2.0], "file": ["x.png"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    with pytest.raises(KdvizError) as err:
        importers.read_logits_file(tmp_path / "t.csv")
    assert "'file'" in _one_sentence(err)
    np.savez(tmp_path / "t.npz", scores=np.zeros((2, 2)))
    with pytest.raises(KdvizError) as err:
        importers.read_logits_file(tmp_path / "t.npz")
    assert "no 'logits'" in _one_sentence(err)


class _Payload:
    """Unpickling this would create the marker file: the test proves it never happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for name, obj in {
        "logits.pt": {"logits": _Payload(marker)},
        "state.pt": {"state_dict": {"w": _Payload(marker)}},
    }.items():
        with open(tmp_path / name, "wb") as handle:
            pickle.dump(obj, handle)  # torch.load reads plain pickles too
    torch.save({"state_dict": {"conv.weight": _Payload(marker)}}, tmp_path / "zip.pt")
    with pytest.raises(KdvizError) as err:
        importers.read_logits_file(tmp_path / "logits.pt")
    assert "never unpickles" in _one_sentence(err)
    for name in ("state.pt", "zip.pt"):
        with pytest.raises(KdvizError):
            importers.import_source(tmp_path / name, "x", arch="lenet", in_shape="1x8x8")
    assert not marker.exists()
    assert "x" not in [name for name, _, _ in models.list_checkpoints()]


def test_logits_card_round_trip_and_split_rows(tmp_path):
    test = load_dataset("digits", "test")
    logits, _ = _logits(n=len(test), c=10, seed=1)
    np.savez(tmp_path / "d.npz", logits=logits, labels=test.labels.numpy())
    stem = importers.import_source(tmp_path / "d.npz", "dlog", dataset="digits")
    card = models.load_card("dlog")
    assert (card.kind, card.num_classes, card.in_shape, card.dataset) == (
        "logits",
        10,
        [],
        "digits",
    )
    assert card.class_names == list(test.class_names) and card.extra["rows"] == len(test)
    assert [name for name, _, _ in models.list_checkpoints()].count("dlog") == 1
    table = importers.load_logits_table(stem)
    np.testing.assert_array_equal(table.logits.numpy(), logits)
    assert torch.equal(dataset_logits("dlog", "digits", "test"), table.logits)
    with pytest.raises(KdvizError) as err:
        importers.source_logits("dlog", "digits", "train")
    assert f"{len(test):,} rows" in _one_sentence(err)
    with pytest.raises(KdvizError) as err:
        models.load_checkpoint("dlog")
    assert "not a model" in _one_sentence(err)
    # evaluate with the split's labels equals evaluate with the labels inside
    inside, with_split = evaluate("dlog", None), evaluate("dlog", "digits", "test")
    assert inside["accuracy"] == with_split["accuracy"] and inside["nll"] == with_split["nll"]


def test_logits_teacher_rows_are_the_transfer_set(tmp_path):
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    onehot = F.one_hot(train.labels, 10).float() * 6.0  # a perfect, confident teacher
    np.savez(tmp_path / "t.npz", logits=onehot.numpy(), labels=train.labels.numpy())
    importers.import_source(tmp_path / "t.npz", "table-teacher", dataset="digits")
    cfg = DistillConfig(
        teacher="table-teacher", arch="mlp-16", dataset="digits", epochs=1, device="cpu"
    )
    result = distill(cfg, save=False)
    assert result.status == "done" and "agreement" not in result.metrics
    assert "Agreement and KL to the teacher are not shown" in result.message
    np.savez(tmp_path / "short.npz", logits=onehot.numpy()[:-3])
    importers.import_source(tmp_path / "short.npz", "short-teacher")
    with pytest.raises(KdvizError) as err:
        distill(dataclasses.replace(cfg, teacher="short-teacher"), save=False)
    msg = _one_sentence(err)
    assert f"{len(train) - 3:,} rows" in msg and f"{len(train):,}" in msg


# ---------------------------------------------------------------------------- state dicts


def _oracle(model: nn.Module, spec: str, split: str = "test") -> tuple[float, float]:
    """Accuracy and NLL of a torch model on a kdviz split, computed directly (no kdviz maths)."""
    ds = load_dataset(spec, split)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model.eval()(((ds.images.float() / 255.0) - mean) / std).double()
    acc = (logits.argmax(1) == ds.labels).double().mean().item()
    return acc, F.cross_entropy(logits, ds.labels).item()


def test_torchvision_resnet18_1ch_imports_and_evaluates_as_pytorch_does(tmp_path):
    model = _resnet18_1ch()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    importers.import_source(
        tmp_path / "plain.pt", "r18", arch="torchvision:resnet18", dataset="digits"
    )
    card = models.load_card("r18")
    # classes and input channels come from the state dict; nothing pickled is kept
    assert card.num_classes == 10 and card.arch_kwargs == {"in_channels": 1}
    assert card.in_shape == [1, 8, 8] and card.mean == list(load_dataset("digits", "test").mean)
    stem = models.resolve_checkpoint("r18")
    assert models._with(stem, ".safetensors").is_file() and not models._with(stem, ".pt").exists()
    acc, nll = _oracle(model, "digits")
    metrics = evaluate("r18", "digits")
    assert metrics["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert metrics["nll"] == pytest.approx(nll, rel=1e-5)


def test_state_dict_layouts_hold_the_same_weights(tmp_path):
    torch.manual_seed(0)
    state = models.create_model("lenet", 10, (1, 8, 8)).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    torch.save({"model": state}, tmp_path / "m.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "st.safetensors"))
    hashes = set()
    for i, file in enumerate(("plain.pt", "w.pt", "m.pth", "st.safetensors")):
        importers.import_source(tmp_path / file, f"le-{i}", arch="lenet", dataset="digits")
        hashes.add(models.load_card(f"le-{i}").weights_sha256)
    assert hashes == {models._hash_state(state)}
    with pytest.raises(KdvizError) as err:
        importers.import_source(tmp_path / "plain.pt", "le-x", arch="lenet")
    assert "--input-shape" in _one_sentence(err)


def test_state_dict_classes_channels_inferred_and_mismatches_refused(tmp_path):
    import torchvision

    torch.manual_seed(0)
    seven = torchvision.models.mobilenet_v3_small(num_classes=7).eval()  # 3 channels, 7 classes
    torch.save(seven.state_dict(), tmp_path / "seven.pt")
    arch = "torchvision:mobilenet_v3_small"
    stem = importers.import_source(tmp_path / "seven.pt", "seven", arch=arch, in_shape="3x32x32")
    card = models.load_card(stem)
    assert card.num_classes == 7 and card.arch_kwargs == {} and card.mean == [0.0] * 3
    loaded, _ = models.load_checkpoint(stem)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), seven(x), atol=1e-5)
    cases = [
        ({"arch": arch, "dataset": "digits"}, "7 classes but dataset 'digits'"),
        ({"arch": "torchvision:mobilenet_v3_large", "in_shape": "3x32x32"}, "missing"),
        ({"arch": arch, "in_shape": "1x32x32"}, "takes 3 channel(s)"),
        ({"arch": "torchvision:resnet19", "in_shape": "3x32x32"}, "resnet18"),
        ({"arch": arch, "classes": "a,b"}, "--classes names 2"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(KdvizError) as err:
            importers.import_source(tmp_path / "seven.pt", "bad", **kwargs)
        assert needle in _one_sentence(err), kwargs
    assert not models._stem_exists(paths.checkpoints_dir() / "bad")


@pytest.mark.slow
def test_timm_state_dict(tmp_path):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=5, in_chans=1).eval()
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    stem = importers.import_source(
        tmp_path / "timm.pt", "t10", arch="timm:resnet10t", in_shape="1x16x16"
    )
    loaded, card = models.load_checkpoint(stem)
    assert card.num_classes == 5 and card.arch_kwargs == {"in_channels": 1}
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)


# ---------------------------------------------------------------------------- ONNX


def test_onnx_import_equals_onnxruntime_and_runs_fixed_batches(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    net = SmallCNN()
    dynamic = _export_onnx(net, tmp_path / "dyn.onnx", (1, 1, 8, 8))
    fixed = _export_onnx(net, tmp_path / "fixed.onnx", (16, 1, 8, 8), dynamic=False)
    importers.import_source(dynamic, "onnx-dyn", in_shape="1x8x8", mean=[0.25], std=[0.5])
    importers.import_source(fixed, "onnx-fixed", dataset="digits", classes=list("abcdefghij"))
    card = models.load_card("onnx-fixed")
    assert (card.kind, card.in_shape, card.class_names[0]) == ("onnx", [1, 8, 8], "a")
    ds = load_dataset("digits", "test")  # 359 rows: not a multiple of the fixed batch of 16
    x = ((ds.images.float() / 255.0 - 0.25) / 0.5).numpy()
    direct = ort.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])
    expected = torch.from_numpy(direct.run(None, {"x": x})[0]).double()
    metrics = evaluate("onnx-dyn", "digits")
    assert metrics["accuracy"] == (expected.argmax(1) == ds.labels).double().mean().item()
    assert metrics["nll"] == pytest.approx(F.cross_entropy(expected, ds.labels).item(), rel=1e-6)
    model, _ = models.load_checkpoint("onnx-fixed")
    assert isinstance(model, importers.OnnxModule)
    model = copy.deepcopy(model)  # st.cache_resource and friends may copy it: no live session
    normalised = torch.from_numpy(((ds.images.float() / 255.0 - ds.mean[0]) / ds.std[0]).numpy())
    with torch.no_grad():
        assert torch.allclose(model(normalised), net(normalised), atol=1e-5)


def test_onnx_metadata_needs_no_flags_and_bad_graphs_are_refused(tmp_path):
    import onnx

    torch.manual_seed(0)
    path = _export_onnx(SmallCNN(3, 4), tmp_path / "meta.onnx", (1, 3, 8, 8))
    graph = onnx.load(str(path))
    meta = {"name": "m", "num_classes": 4, "class_names": list("wxyz"), "in_shape": [3, 8, 8],
            "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "arch": "cnn"}  # fmt: skip
    graph.metadata_props.add(key="kdviz_card", value=json.dumps(meta))
    onnx.save(graph, str(path))
    card = models.load_card(importers.import_source(path, "with-meta"))
    assert card.class_names == list("wxyz") and card.mean == [0.5, 0.4, 0.3]
    assert card.in_shape == [3, 8, 8] and card.extra["onnx_arch"] == "cnn"
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    flat = tmp_path / "flat.onnx"  # dynamic height and width, but a Linear that fixes them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)),
            (torch.zeros(1, 3, 8, 8),),
            str(flat),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        )
    cases = [
        (path, {"in_shape": "3x9x9"}, "takes input ['n', 3, 8, 8]"),
        (flat, {"in_shape": "3x9x9"}, "does not run on input"),
        (path, {"dataset": "digits"}, "4 classes but dataset 'digits' has 10"),
        (path, {"classes": "a,b"}, "--classes names 2"),
        (tmp_path / "junk.onnx", {}, "not a valid ONNX model"),
    ]
    for file, kwargs, needle in cases:
        with pytest.raises(KdvizError) as err:
            importers.import_source(file, "bad", **kwargs)
        assert needle in _one_sentence(err), kwargs
    assert [n for n, _, _ in models.list_checkpoints() if n == "bad"] == []


def test_onnx_teacher_distils_into_a_torch_student(tmp_path):
    torch.manual_seed(0)
    importers.import_source(
        _export_onnx(SmallCNN(), tmp_path / "t.onnx", (1, 1, 8, 8)),
        "onnx-teacher",
        dataset="digits",
    )
    cfg = DistillConfig(
        teacher="onnx-teacher", arch="mlp-16", dataset="digits", epochs=1, device="cpu"
    )
    result = distill(cfg, save=False)
    assert result.status == "done" and 0.0 <= result.metrics["agreement"] <= 1.0
    cached = sorted((paths.cache_dir() / "logits").glob("*.pt"))
    assert len(cached) == 2  # the teacher's train and val logits, computed once
    val = dataset_logits("onnx-teacher", "digits", "val")
    assert any(torch.equal(val, torch.load(file)) for file in cached)
    jitter = distill(dataclasses.replace(cfg, augment="jitter"), save=False)
    assert jitter.status == "done"  # the teacher runs on every augmented batch


def test_kdviz_export_round_trip_needs_no_flags(tmp_path):
    from kdviz.export import export_onnx

    exported = export_onnx("digits-student", tmp_path / "student.onnx")
    stem = importers.import_source(exported.path, "student-back")
    card, original = models.load_card(stem), models.load_card("digits-student")
    for field in ("num_classes", "class_names", "in_shape", "mean", "std"):
        assert getattr(card, field) == getattr(original, field), field
    back, direct = evaluate("student-back", "digits"), evaluate("digits-student", "digits")
    assert back["accuracy"] == direct["accuracy"]
    assert back["nll"] == pytest.approx(direct["nll"], rel=1e-5)


def test_import_never_replaces_a_checkpoint_without_replace(tmp_path):
    table = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]] * 5
    np.savez(tmp_path / "a.npz", logits=table, labels=np.array([0, 1, 2, 0]))
    np.savez(tmp_path / "b.npz", logits=-table, labels=np.array([0, 1, 2, 0]))
    importers.import_source(tmp_path / "a.npz", "mine")
    with pytest.raises(KdvizError) as err:
        importers.import_source(tmp_path / "b.npz", "mine")
    assert "--replace" in _one_sentence(err)
    assert importers.load_logits_table("mine").logits[0, 0] > 0  # the first import is intact
    importers.import_source(tmp_path / "b.npz", "mine", replace=True)
    assert importers.load_logits_table("mine").logits[0, 0] < 0
