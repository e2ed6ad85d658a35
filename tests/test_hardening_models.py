"""Hardening of the model layer, the engine's config checks and the CLI (issue 9).

Each test is one class of fault a careless or hostile user can cause: a logit-cache key that a
card field could blank, a name that escapes KDVIZ_HOME, out-of-range numbers, resource bombs in
architectures and cards. Fixtures are tiny cards and models written here; limits are lowered
with monkeypatch where the real ones would need large files.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdviz import models, soft
from kdviz.cli import main
from kdviz.data import load_dataset
from kdviz.engine import evaluate
from kdviz.errors import KdvizError
from kdviz.models import ModelCard, card_fingerprint, create_model, save_checkpoint


def _digits_card(arch: str = "mlp-30") -> ModelCard:
    ds = load_dataset("digits", "train")
    return ModelCard(
        arch=arch,
        num_classes=ds.num_classes,
        class_names=list(ds.class_names),
        in_shape=list(ds.in_shape),
        mean=list(ds.mean),
        std=list(ds.std),
        dataset="digits",
    )


def _edit_card(stem: Path, **fields) -> None:
    path = stem.with_name(stem.name + ".json")
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def _pair_files(tmp_path_factory) -> Path:
    """A: an mlp-30 fitted to digits (high accuracy); B: the same arch always saying class 3.
    Both cards have an EMPTY weights_sha256 (what a user may do to a card). Built once."""
    folder = tmp_path_factory.mktemp("pair")
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    good = create_model("mlp-30", train.num_classes, train.in_shape)
    opt = torch.optim.Adam(good.parameters(), lr=3e-2)
    x = train.normalized()
    for _ in range(40):  # full batch: ~0.98 test accuracy
        opt.zero_grad()
        F.cross_entropy(good(x), train.labels).backward()
        opt.step()
    bad = create_model("mlp-30", train.num_classes, train.in_shape)
    with torch.no_grad():
        bad.head.weight.zero_()
        bad.head.bias.zero_()
        bad.head.bias[3] = 5.0
    for name, model in (("a", good), ("b", bad)):
        stem = save_checkpoint(model.eval(), _digits_card(), folder / name)
        _edit_card(stem, weights_sha256="")
    return folder


@pytest.fixture
def pair(_pair_files, tmp_path) -> tuple[Path, Path]:
    """Fresh copies of A and B in this test's folder (tests edit them)."""
    for file in _pair_files.iterdir():
        shutil.copy2(file, tmp_path / file.name)
    return tmp_path / "a", tmp_path / "b"


def _true_logits(stem: Path, split: str = "test") -> torch.Tensor:
    """Logits computed directly in torch from the weights file (no kdviz cache involved)."""
    from safetensors.torch import load_file

    ds = load_dataset("digits", split)
    model = create_model("mlp-30", ds.num_classes, ds.in_shape)
    model.load_state_dict(load_file(str(stem.with_name(stem.name + ".safetensors"))))
    with torch.no_grad():
        return model.eval()(ds.normalized())


# --- 1. the logit cache is keyed by the weights' bytes ------------------------------------------


def test_cards_with_blank_hash_and_different_weights_never_share_cached_logits(pair, tmp_path):
    a, b = pair
    labels = load_dataset("digits", "test").labels
    true_a, true_b = _true_logits(a), _true_logits(b)
    acc_a, acc_b = soft.accuracy(true_a, labels), soft.accuracy(true_b, labels)
    assert acc_a > 0.8 and acc_b < 0.2  # very different models
    assert card_fingerprint(a) != card_fingerprint(b)
    # A first (fills the cache), then B: B must report its own score, not A's cached one.
    assert evaluate(a, "digits")["accuracy"] == pytest.approx(acc_a)
    assert evaluate(b, "digits")["accuracy"] == pytest.approx(acc_b)
    # As a teacher: agreement and KL against the true teacher logits.
    for teacher, true_t in ((a, true_a), (b, true_b)):
        metrics = evaluate(a, "digits", teacher=teacher)
        assert metrics["agreement"] == pytest.approx(soft.agreement(true_t, true_a))
        want_kl = float(soft.kl_divergence(true_t, true_a, 1.0).mean())
        assert metrics["kl"] == pytest.approx(want_kl, rel=1e-4, abs=1e-6)
    assert evaluate(a, "digits", teacher=b)["agreement"] < 0.2


def test_fingerprint_follows_the_file_not_the_card(pair, tmp_path):
    a, b = pair
    before = card_fingerprint(a)
    _edit_card(a, weights_sha256="0" * 64, metrics={"x": 1})  # editable fields: no effect
    assert card_fingerprint(a) == before
    weights = a.with_name("a.safetensors")
    weights.write_bytes(b.with_name("b.safetensors").read_bytes())  # same bytes as B ...
    _edit_card(a, weights_sha256="")
    assert card_fingerprint(a) == card_fingerprint(b)  # ... same key; the memo saw the rewrite


def test_ensemble_fingerprint_combines_member_files(pair, tmp_path):
    a, b = pair
    card = _digits_card()
    models.save_ensemble_card(dataclasses.replace(card, members=["a", "b"]), tmp_path / "ab")
    models.save_ensemble_card(dataclasses.replace(card, members=["a", "a"]), tmp_path / "aa")
    prints = {card_fingerprint(tmp_path / n) for n in ("ab", "aa")} | {card_fingerprint(a)}
    assert len(prints) == 3


def test_hash_mismatch_error_no_longer_says_clear_the_field(pair, tmp_path):
    a, _ = pair
    _edit_card(a, weights_sha256="0" * 64)
    with pytest.raises(KdvizError) as err:
        models.load_checkpoint(a)
    assert "clear" not in str(err.value) and "re-save" in str(err.value)


# --- helpers for the CLI cases -------------------------------------------------------------------

TINY = ["--dataset", "digits", "--epochs", "1", "--batch-size", "256", "--device", "cpu"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdviz: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --- 2. names are names ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_name_with_dotdot_exits_2_and_writes_nothing_outside_home(
    command, kdviz_home, tmp_path, capsys
):
    outside = kdviz_home.parent
    before = _files_under(outside) - _files_under(kdviz_home)
    extra = ["--teacher", "t"] if command == "distill" else []
    assert main([command, *TINY, *extra, "--name", "../../x"]) == 2
    assert "'../../x'" in _one_line_error(capsys)
    assert _files_under(outside) - _files_under(kdviz_home) == before
    assert not list(outside.parent.glob("x*"))
    from kdviz.runs import RunStore

    assert RunStore().list_runs() == []  # refused before the run was recorded


def test_fit_refuses_a_path_as_a_name_before_any_write(kdviz_home):
    from kdviz.engine import TrainConfig, fit

    for name in ("a/b", "..", ".hidden", "x\\y"):
        with pytest.raises(KdvizError, match="not a plain name"):
            fit(TrainConfig(dataset="digits", arch="mlp-30", epochs=1, name=name, device="cpu"))
    assert not (kdviz_home / "checkpoints").exists() or not any(
        (kdviz_home / "checkpoints").iterdir()
    )


# --- 3. numbers in range, checked against the data -----------------------------------------------

BAD_FLAGS = [
    (["train", "--weight-decay", "nan"], "weight decay"),
    (["train", "--weight-decay=-1e30"], "weight decay"),
    (["train", "--warmup-epochs", "nan"], "warm-up"),
    (["train", "--warmup-epochs", "inf"], "warm-up"),
    (["train", "--warmup-epochs", "5"], "warm-up"),  # more than --epochs 1
    (["train", "--seed", str(2**64)], "seed"),
    (["train", "--seed", "-1"], "seed"),
    (["train", "--epochs", str(10**30)], "epochs"),
    (["train", "--batch-size", str(10**30)], "batch size"),
    (["train", "--lr", "inf"], "learning rate"),
    (["train", "--lr", "nan"], "learning rate"),
    (["train", "--label-smoothing", "nan"], "label smoothing"),
    (["train", "--dropout", "1"], "dropout"),
    (["train", "--device", "meta"], "meta"),
    (["train", "--device", "xla"], "xla"),
    (["train", "--arch", "mlp-100000000-100000000"], "limit"),
    (["train", "--arch", f"resnet{6 * 10**9 + 2}"], "limit"),
    (["distill", "--teacher", "t", "--method", "dkd", "--alpha", "-1"], "alpha"),
    (["distill", "--teacher", "t", "--method", "dkd", "--beta", "inf"], "beta"),
    (["distill", "--teacher", "t", "--method", "kd", "--alpha", "1.5"], "alpha"),
    (["distill", "--teacher", "t", "--method", "mse", "--alpha", "nan"], "alpha"),
    (["distill", "--teacher", "t", "--temperature", "nan"], "temperature"),
    (["distill", "--teacher", "t", "--temperature", "0"], "temperature"),
    (["distill", "--teacher", "t", "--transfer-fraction", "nan"], "transfer fraction"),
    (["distill", "--teacher", "t", "--omit-classes", "99"], "99"),  # digits has classes 0-9
    (["distill", "--teacher", "t", "--omit-classes", "-1"], "omitted class"),
]


@pytest.mark.parametrize(("argv", "word"), BAD_FLAGS, ids=[" ".join(a[1:]) for a, _ in BAD_FLAGS])
def test_out_of_range_flags_exit_2_with_one_sentence(argv, word, kdviz_home, capsys):
    # the flag under test comes last, so it overrides TINY's value
    assert main([argv[0], *TINY, *argv[1:]]) == 2
    assert word in _one_line_error(capsys)
    checkpoints = kdviz_home / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_omitted_class_message_names_the_valid_range(capsys):
    assert main(["distill", *TINY, "--teacher", "t", "--omit-classes", "3", "99"]) == 2
    assert "0 to 9" in _one_line_error(capsys)


def test_runs_limit_is_bounded(capsys):
    assert main(["runs", "--limit", str(10**30)]) == 2
    assert "--limit" in _one_line_error(capsys)
    assert main(["runs", "--limit", "5"]) == 0


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "10**30"])
    assert exc.value.code == 2
    assert "--epochs" in _one_line_error(capsys)


def test_card_with_a_tiny_std_is_refused_at_load(pair, tmp_path, capsys):
    a, _ = pair
    _edit_card(a, std=[1e-300])
    with pytest.raises(KdvizError, match="std"):
        models.load_card(a)
    assert main(["evaluate", str(a), "--dataset", "digits"]) == 2
    assert "std" in _one_line_error(capsys)


# --- 4. resource bombs, bounded before allocating ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "k", "shape", "word"),
    [
        ("mlp-100000000-100000000", 10, (1, 28, 28), "parameters"),
        ("mlp-" + "9" * 5000, 10, (1, 28, 28), "parameters"),  # int() itself refuses 5000 digits
        ("mlp" + "-1" * 3000, 10, (1, 8, 8), "hidden layers"),
        (f"resnet{6 * 10**8 + 2}", 10, (3, 32, 32), "deeper"),
        ("lenet", 10**9, (1, 8, 8), "classes"),
        ("lenet", 10, (65, 8, 8), "channels"),
        ("lenet", 10, (1, 5000, 5000), "pixels"),
        ("cnn-wide", 10, (64, 1024, 1025), "values"),
    ],
)
def test_absurd_architectures_are_refused_with_the_limit(name, k, shape, word):
    with pytest.raises(KdvizError) as err:
        create_model(name, k, shape)
    message = str(err.value)
    assert word in message and "limit" in message and "\n" not in message
    assert len(message) < 400  # a 5000-digit name is shortened in the sentence


@pytest.mark.parametrize(
    "name", ["mlp-30", "mlp-64-32", "lenet", "cnn-wide", "resnet8", "resnet14"]
)
@pytest.mark.parametrize(("k", "shape"), [(10, (1, 8, 8)), (7, (3, 16, 16))])
def test_parameter_estimate_is_exact(name, k, shape, monkeypatch):
    """The estimate from the name equals the built model's count: the limit is the count itself."""
    real = sum(p.numel() for p in create_model(name, k, shape).parameters())
    monkeypatch.setenv("KDVIZ_MAX_PARAMS", str(real))
    create_model(name, k, shape)
    monkeypatch.setenv("KDVIZ_MAX_PARAMS", str(real - 1))
    with pytest.raises(KdvizError, match=f"limit of {real - 1:,}"):
        create_model(name, k, shape)


def test_out_of_memory_while_building_is_a_sentence(monkeypatch):
    def boom(name, num_classes, in_shape):
        raise MemoryError

    monkeypatch.setitem(models._MODELS, "boom", models._Entry("boom", boom, (), "boom"))
    with pytest.raises(KdvizError, match="not enough memory"):
        create_model("boom", 10, (1, 8, 8))


def _write_card(path: Path, **fields) -> Path:
    card = {"num_classes": 10, "in_shape": [1, 8, 8], "mean": [0.5], "std": [0.25]}
    card.update(fields)
    path.write_text(json.dumps(card))
    return path.with_suffix("")


def test_a_card_nested_10000_deep_is_a_sentence(tmp_path):
    stem = _write_card(tmp_path / "deep.json", arch="mlp-30")
    text = stem.with_suffix(".json").read_text()
    stem.with_suffix(".json").write_text(
        text[:-1] + ', "training": ' + "[" * 10_000 + "]" * 10_000 + "}"
    )
    with pytest.raises(KdvizError, match="nests JSON too deeply"):
        models.load_card(stem)


def test_a_card_with_a_billion_classes_is_refused_before_naming_them(tmp_path):
    stem = _write_card(tmp_path / "wide.json", arch="mlp-30", num_classes=10**9)
    with pytest.raises(KdvizError, match="num_classes"):
        models.load_card(stem)


def test_ensemble_fan_out_is_refused_quickly_by_both_walkers(pair, tmp_path):
    """10 members, 7 levels deep (10**7 leaves): refused while walking the cards, not a hang."""
    import time

    a, _ = pair
    below = "a"
    for level in range(1, 8):
        _write_card(tmp_path / f"e{level}.json", kind="ensemble", members=[below] * 10)
        below = f"e{level}"
    started = time.perf_counter()
    for walk in (models.load_checkpoint, card_fingerprint):
        with pytest.raises(KdvizError, match="limit"):
            walk(tmp_path / "e7")
    assert time.perf_counter() - started < 5.0
    models.load_checkpoint(tmp_path / "e1")  # 10 members is fine


def test_ensemble_depth_is_capped(pair, tmp_path, monkeypatch):
    a, _ = pair
    below = "a"
    for level in range(1, 6):
        _write_card(tmp_path / f"d{level}.json", kind="ensemble", members=[below])
        below = f"d{level}"
    models.load_checkpoint(tmp_path / f"d{models.MAX_ENSEMBLE_DEPTH}")
    for walk in (models.load_checkpoint, card_fingerprint):
        with pytest.raises(KdvizError, match="levels"):
            walk(tmp_path / f"d{models.MAX_ENSEMBLE_DEPTH + 1}")
    monkeypatch.setattr(models, "MAX_ENSEMBLE_MEMBERS", 3)
    _write_card(tmp_path / "four.json", kind="ensemble", members=["a"] * 4)
    with pytest.raises(KdvizError, match="more than 3 members"):
        card_fingerprint(tmp_path / "four")


def test_a_self_referencing_ensemble_as_teacher_is_a_sentence(pair, tmp_path, capsys):
    a, _ = pair
    _write_card(tmp_path / "loop.json", kind="ensemble", members=["a", "loop"])
    with pytest.raises(KdvizError, match="includes itself"):
        card_fingerprint(tmp_path / "loop")
    argv = ["evaluate", str(a), "--dataset", "digits", "--teacher", str(tmp_path / "loop")]
    assert main(argv) == 2
    assert "includes itself" in _one_line_error(capsys)


# --- 5. the CLI turns path and memory faults into one sentence -----------------------------------


def test_an_out_path_under_a_file_is_a_sentence(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["train", *TINY, "--arch", "mlp-30", "--json", "--out", str(blocker / "m")]) == 2
    err = _one_line_error(capsys)
    assert str(blocker) in err and "in the way" in err


def test_memory_error_is_a_sentence_and_other_os_errors_are_not_hidden(monkeypatch, capsys):
    from kdviz import cli

    def out_of_memory(args):
        raise MemoryError

    monkeypatch.setitem(cli.COMMANDS, "runs", out_of_memory)
    assert main(["runs"]) == 2
    assert "out of memory" in _one_line_error(capsys)

    def a_bug(args):
        raise OSError("no path involved")

    monkeypatch.setitem(cli.COMMANDS, "runs", a_bug)
    with pytest.raises(OSError, match="no path involved"):
        main(["runs"])
