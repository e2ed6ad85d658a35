"""One tiny end-to-end run per command, through `kdviz.cli.main` and once as a real process."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from kdviz.cli import main
from kdviz.data import load_dataset
from kdviz.paths import PRETRAINED_DIR

TINY = ["--epochs", "1", "--batch-size", "64", "--device", "cpu"]


def _write_idx(path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic, big-endian dims, then the uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_list_json_names_models_datasets_checkpoints(capsys):
    assert main(["list", "--json"]) == 0
    out = _json_out(capsys)
    assert "mlp-800-800" in out["models"]
    assert "mnist5k" in out["datasets"] and "idx:PATH" in out["datasets"]
    assert isinstance(out["checkpoints"], list)


def test_train_distill_evaluate_round_trip(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--arch",
                "mlp-64",
                *TINY,
                "--out",
                str(teacher),
                "--json",
            ]
        )
        == 0
    )
    trained = _json_out(capsys)
    assert trained["status"] == "done" and trained["checkpoint"] == str(teacher)

    student = tmp_path / "student"
    args = [
        "distill",
        "--teacher",
        f"{teacher}.json",
        "--student",
        "mlp-30-30",
        "--dataset",
        "digits",
    ]
    assert main([*args, "-T", "3", "--alpha", "0.7", *TINY, "--out", str(student), "--json"]) == 0
    distilled = _json_out(capsys)
    assert distilled["status"] == "done"
    assert 0.0 <= distilled["metrics"]["agreement"] <= 1.0

    assert (
        main(
            [
                "evaluate",
                f"{student}.safetensors",
                "--dataset",
                "digits",
                "--teacher",
                str(teacher),
                "--json",
            ]
        )
        == 0
    )
    metrics = _json_out(capsys)
    assert {"n", "accuracy", "nll", "ece", "agreement", "kl"} <= set(metrics)
    assert metrics["n"] == len(load_dataset("digits", "test"))

    assert main(["evaluate", str(student), "--dataset", "digits"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_user_errors_exit_2_with_one_sentence(capsys):
    assert main(["evaluate", "no-such-checkpoint", "--dataset", "digits", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdviz: error:") and "Traceback" not in err
    assert main(["train", "--dataset", "nope", *TINY]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_shipped_teacher_on_an_idx_folder_with_only_the_test_files(tmp_path, capsys):
    """DESIGN's done-when: the shipped teacher on a folder holding only the t10k files."""
    test = load_dataset("mnist5k", "test")
    folder = tmp_path / "mnist-test-only"
    folder.mkdir()
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", test.images[:, 0].numpy())
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", test.labels.numpy())
    teacher = PRETRAINED_DIR / "mnist5k-teacher"
    code = main(
        ["evaluate", str(teacher), "--dataset", f"idx:{folder}", "--split", "test", "--json"]
    )
    assert code == 0
    metrics = _json_out(capsys)
    assert metrics["n"] == len(test)
    assert metrics["accuracy"] > 0.97
    capsys.readouterr()
    main(["evaluate", str(teacher), "--dataset", "mnist5k", "--split", "test", "--json"])
    assert _json_out(capsys)["accuracy"] == pytest.approx(metrics["accuracy"])


def test_experiment_without_a_name_lists_the_experiments(capsys):
    assert main(["experiment"]) == 0
    out = capsys.readouterr().out
    for name in ("temperature-sweep", "omitted-class", "ensemble-to-one"):
        assert name in out
    assert main(["experiment", "no-such-experiment"]) == 2
    assert "temperature-sweep" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "kdviz", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for command in ("list", "train", "distill", "evaluate", "runs", "experiment", "app"):
        assert command in proc.stdout


def test_kdviz_app_serves_the_app(tmp_path):
    """`kdviz app` (what `make app` runs) starts Streamlit in-process and answers its health check."""
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdviz", "app", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_stcore/health", timeout=1
                ) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None, "kdviz app exited"
                assert time.monotonic() < deadline, "kdviz app never became healthy"
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
