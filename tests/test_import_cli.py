"""`kdviz import` and the commands that then take the imported NAME (evaluate, distill, list),
through kdviz.cli.main, with results checked against numpy / PyTorch / onnxruntime directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdviz.cli import main
from kdviz.data import load_dataset


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(capsys, *argv: str) -> dict:
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def _numpy_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy and NLL in float64 numpy: an oracle independent of kdviz.soft."""
    z = logits.astype(np.float64)
    log_probs = z - z.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    nll = -log_probs[np.arange(len(labels)), labels].mean()
    return float((z.argmax(1) == labels).mean()), float(nll)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 2).flatten(1))  # (N, 10)


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SmallCNN().eval(),
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )
    return path


def test_onnx_import_evaluate_and_list(capsys, onnx_file):
    import onnxruntime as ort

    code, out, err = _run(
        capsys, "import", str(onnx_file), "--name", "my-onnx", "--input-shape", "1x8x8",
        "--mean", "0.2", "--std", "0.35",
    )  # fmt: skip
    assert code == 0 and out.strip().endswith("checkpoints/my-onnx"), err
    metrics = _json(capsys, "evaluate", "my-onnx", "--dataset", "digits", "--json")
    ds = load_dataset("digits", "test")
    x = ((ds.images.float() / 255.0 - 0.2) / 0.35).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    acc, nll = _numpy_metrics(session.run(None, {"x": x})[0], ds.labels.numpy())
    assert metrics["accuracy"] == acc and metrics["nll"] == pytest.approx(nll, rel=1e-6)
    listed = _json(capsys, "list", "checkpoints", "--json")["checkpoints"]
    assert {"name": "my-onnx", "kind": "onnx"}.items() <= next(
        c for c in listed if c["name"] == "my-onnx"
    ).items()


def test_distill_with_an_onnx_teacher(capsys, onnx_file):
    assert (
        _run(capsys, "import", str(onnx_file), "--name", "my-onnx", "--dataset", "digits")[0] == 0
    )
    result = _json(
        capsys, "distill", "--teacher", "my-onnx", "--student", "mlp-30-30", "--dataset",
        "digits", "--epochs", "1", "--device", "cpu", "--json",
    )  # fmt: skip
    assert result["status"] == "done" and "agreement" in result["metrics"]


@pytest.mark.parametrize("fmt", ["npz", "csv", "parquet"])
def test_evaluate_a_logits_file_without_model_or_dataset(capsys, tmp_path, fmt):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(64, 5)).astype(np.float32) * 2
    labels = rng.integers(0, 5, size=64)
    file = tmp_path / f"scores.{fmt}"
    if fmt == "npz":
        np.savez(file, logits=logits, labels=labels)
    else:
        frame = pd.DataFrame(logits, columns=[f"c{i}" for i in range(5)]).assign(label=labels)
        frame.to_csv(file, index=False) if fmt == "csv" else frame.to_parquet(file)
    metrics = _json(capsys, "evaluate", str(file), "--json")
    acc, nll = _numpy_metrics(logits, labels)
    assert metrics["n"] == 64 and metrics["accuracy"] == acc
    assert metrics["nll"] == pytest.approx(nll, rel=1e-6)
    # imported, the same table evaluates the same by name
    assert _run(capsys, "import", str(file), "--name", f"tab-{fmt}")[0] == 0
    assert _json(capsys, "evaluate", f"tab-{fmt}", "--json")["nll"] == metrics["nll"]


def test_logits_with_dataset_rows_and_as_teacher(capsys, tmp_path):
    train = load_dataset("digits", "train")
    logits = F.one_hot(train.labels, 10).float().numpy() * 5.0
    np.savez(tmp_path / "train.npz", logits=logits, labels=train.labels.numpy())
    assert _run(capsys, "import", str(tmp_path / "train.npz"), "--name", "tl", "--dataset", "digits")[0] == 0  # fmt: skip
    metrics = _json(capsys, "evaluate", "tl", "--dataset", "digits", "--split", "train", "--json")
    assert metrics["accuracy"] == 1.0 and metrics["n"] == len(train)
    code, _, err = _run(capsys, "evaluate", "tl", "--dataset", "digits", "--json")
    assert code == 2 and f"{len(train):,} rows" in err and err.count("\n") == 1
    result = _json(
        capsys, "distill", "--teacher", "tl", "--student", "mlp-30-30", "--dataset", "digits",
        "--epochs", "1", "--device", "cpu", "--json",
    )  # fmt: skip
    assert result["status"] == "done" and "not shown" in result["message"]


def _bad_inputs(tmp: Path, onnx_file: Path) -> list[tuple[list[str], str]]:
    np.savez(tmp / "nan.npz", logits=np.array([[0.0, np.nan], [1.0, 2.0]]))
    np.savez(tmp / "range.npz", logits=np.zeros((2, 3)), labels=np.array([0, 3]))
    np.savez(tmp / "seven.npz", logits=np.zeros((4, 7)))
    np.savez(tmp / "nolabels.npz", logits=np.zeros((4, 7)))
    lenet = {"features.0.weight": torch.zeros(6, 1, 5, 5)}
    torch.save(lenet, tmp / "partial.pt")
    return [
        (["evaluate", str(tmp / "nan.npz")], "NaN or infinite"),
        (["import", str(tmp / "range.npz"), "--name", "x"], "label 3 in row 1"),
        (["import", str(tmp / "seven.npz"), "--name", "x", "--dataset", "digits"], "7 classes"),
        (["evaluate", str(tmp / "nolabels.npz")], "have no labels"),
        (["import", str(onnx_file), "--name", "x", "--input-shape", "3x8x8"], "takes input"),
        (
            ["import", str(tmp / "partial.pt"), "--name", "x", "--arch", "torchvision:resnet1"],
            "resnet18",
        ),  # fmt: skip
        (
            [
                "import",
                str(tmp / "partial.pt"),
                "--name",
                "x",
                "--arch",
                "lenet",
                "--dataset",
                "digits",
            ],
            "no 'classifier.4.weight'",
        ),  # fmt: skip
        (["import", str(tmp / "partial.pt"), "--name", "x"], "--arch"),
        (["import", str(tmp / "nan.npz"), "--name", "../x"], "not a plain name"),
        (["evaluate", "digits-teacher"], "--dataset"),
    ]


def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, onnx_file):
    for argv, needle in _bad_inputs(tmp_path, onnx_file):
        code, out, err = _run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert err.startswith("kdviz: error: ") and err.count("\n") == 1, err
        assert needle in err, (argv, err)
    listed = _json(capsys, "list", "checkpoints", "--json")["checkpoints"]
    assert all(c["name"] != "x" for c in listed)


def test_pickle_payload_never_runs_through_the_cli(capsys, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"logits": Payload()}, tmp_path / "evil.pt")
    torch.save({"state_dict": {"conv1.weight": Payload()}}, tmp_path / "evil_state.pt")
    for argv in (
        ["evaluate", str(tmp_path / "evil.pt")],
        ["import", str(tmp_path / "evil.pt"), "--name", "evil"],
        [
            "import",
            str(tmp_path / "evil_state.pt"),
            "--name",
            "evil",
            "--arch",
            "torchvision:resnet18",
        ],  # fmt: skip
    ):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "never unpickles" in err, err
    assert not marker.exists()


@pytest.mark.slow  # two interpreter start-ups; the in-process tests above cover the same paths
def test_real_process_prints_the_stem_and_exits_2_on_bad_input(tmp_path):
    np.savez(tmp_path / "ok.npz", logits=np.eye(3) * 4, labels=np.arange(3))
    np.savez(tmp_path / "bad.npz", logits=np.ones((3, 3)), labels=np.array([0, 1, 9]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run(
        [sys.executable, "-m", "kdviz", "import", str(tmp_path / "ok.npz"), "--name", "eye"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.strip().endswith("checkpoints/eye"), ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "kdviz", "evaluate", str(tmp_path / "bad.npz"), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "label 9 in row 2" in bad.stderr


@pytest.mark.slow
def test_resnet18_wrapped_state_dict_through_the_cli(capsys, tmp_path):
    import torchvision

    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "r18.pt")
    argv = ["import", str(tmp_path / "r18.pt"), "--name", "r18", "--arch", "torchvision:resnet18"]
    assert _run(capsys, *argv, "--dataset", "digits")[0] == 0
    metrics = _json(capsys, "evaluate", "r18", "--dataset", "digits", "--json")
    ds = load_dataset("digits", "test")
    with torch.no_grad():
        logits = model.eval()(ds.normalized()).numpy()
    acc, nll = _numpy_metrics(logits, ds.labels.numpy())
    assert metrics["accuracy"] == acc and metrics["nll"] == pytest.approx(nll, rel=1e-5)
