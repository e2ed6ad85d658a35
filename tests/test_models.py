"""Tests for kdviz/models.py: registry, architectures, cards, checkpoints and safe loading."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from kdviz import __version__, paths
from kdviz.errors import KdvizError
from kdviz.models import (
    Ensemble,
    ModelCard,
    create_model,
    list_checkpoints,
    list_model_patterns,
    list_models,
    load_card,
    load_checkpoint,
    register_model,
    resolve_checkpoint,
    save_checkpoint,
    save_ensemble_card,
    weights_hash,
)

IN_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
K = 7  # not 10, so nothing can silently assume ten classes


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _card(arch: str = "mlp-30-30", in_shape=(1, 8, 8), num_classes: int = K, **kw) -> ModelCard:
    c = in_shape[0]
    return ModelCard(
        name=kw.pop("name", ""),
        arch=arch,
        num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)],
        in_shape=list(in_shape),
        mean=[0.5] * c,
        std=[0.25] * c,
        dataset="digits",
        training={"epochs": 1, "lr": 0.1},
        metrics={"test_accuracy": 0.5},
        **kw,
    )


def _saved(stem: Path, arch: str = "mlp-30-30", seed: int = 0, **card_kw) -> tuple[nn.Module, Path]:
    torch.manual_seed(seed)
    card = _card(arch, **card_kw)
    model = create_model(arch, card.num_classes, tuple(card.in_shape), **card.arch_kwargs)
    return model.eval(), save_checkpoint(model, card, stem)


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg and msg.endswith(".")
    return msg


# --- registry and architectures ------------------------------------------------------------


def test_list_models_contract_order():
    assert list_models() == [
        "mlp-1200-1200",
        "mlp-800-800",
        "mlp-30-30",
        "lenet",
        "cnn-wide",
        "resnet8",
        "resnet20",
    ]
    assert any(p.startswith("mlp-H1-H2") for p in list_model_patterns())


@pytest.mark.parametrize("in_shape", IN_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_backward(name, in_shape):
    torch.manual_seed(0)
    model = create_model(name, K, in_shape)
    x = torch.randn(3, *in_shape)  # (N, C, H, W), normalised
    logits = model(x)
    assert logits.shape == (3, K) and logits.dtype == torch.float32
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.inference_mode():
        assert model(x[:1]).shape == (1, K)


@pytest.mark.parametrize("name", list_models())
def test_init_is_deterministic_under_manual_seed(name):
    torch.manual_seed(123)
    a = create_model(name, K, (1, 8, 8))
    torch.manual_seed(123)
    b = create_model(name, K, (1, 8, 8))
    assert weights_hash(a) == weights_hash(b)
    torch.manual_seed(124)
    assert weights_hash(create_model(name, K, (1, 8, 8))) != weights_hash(a)


def test_parameter_counts():
    mnist = (1, 28, 28)
    # 784*30+30 + 30*30+30 + 30*10+10
    assert _n_params(create_model("mlp-30-30", 10, mnist)) == 24_790
    assert (
        _n_params(create_model("mlp-800-800", 10, mnist))
        == 784 * 800 + 800 + 800 * 800 + 800 + 8010
    )
    assert _n_params(create_model("mlp-1200-1200", 10, mnist)) == 2_395_210
    assert _n_params(create_model("resnet20", 10, (3, 32, 32))) == 269_722  # He et al.: 0.27M
    assert _n_params(create_model("resnet8", 10, (3, 32, 32))) == 75_290
    assert _n_params(create_model("lenet", 10, mnist)) == 61_706
    assert 100_000 < _n_params(create_model("cnn-wide", 10, mnist)) < 1_000_000


def test_mlp_name_parser_and_dropout():
    model = create_model("mlp-5", 3, (1, 2, 2))
    assert [layer.out_features for layer in model.hidden] == [5]
    model = create_model("MLP-10-20-30-40", 3, (2, 3, 3))  # case-insensitive
    assert [layer.out_features for layer in model.hidden] == [10, 20, 30, 40]
    assert model.hidden[0].in_features == 18 and model.head.in_features == 40
    teacher = create_model("mlp-1200-1200", 10, (1, 28, 28), dropout=0.5, input_dropout=0.2)
    assert teacher.dropout.p == 0.5 and teacher.input_dropout.p == 0.2
    # dropout changes no parameter names, so cards with and without dropout share weights
    assert (
        teacher.state_dict().keys()
        == create_model("mlp-1200-1200", 10, (1, 28, 28)).state_dict().keys()
    )
    for bad in ["mlp-", "mlp-0", "mlp-a-3", "mlp--3", "mlp-3-", "mlp-1.5"]:
        with pytest.raises(KdvizError) as err:
            create_model(bad, 3, (1, 2, 2))
        _one_sentence(err)
    for kw in [{"dropout": 1.0}, {"input_dropout": -0.1}, {"dropout": "0.5"}]:
        with pytest.raises(KdvizError):
            create_model("mlp-4", 3, (1, 2, 2), **kw)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KdvizError) as err:
        create_model("vgg16", 10, (1, 28, 28))
    msg = _one_sentence(err)
    assert "vgg16" in msg
    assert all(name in msg for name in list_models())
    assert "mlp-H1-H2" in msg


def test_bad_arguments_raise_kdviz_error():
    with pytest.raises(KdvizError) as err:
        create_model("lenet", 10, (1, 28, 28), dropout=0.5)  # lenet takes no options
    assert "dropout" in _one_sentence(err)
    with pytest.raises(KdvizError):
        create_model("resnet9", 10, (3, 32, 32))  # not 6n+2
    assert _n_params(create_model("resnet14", 10, (3, 32, 32))) > 75_290  # any 6n+2 works
    for shape in [(28, 28), (1, 0, 28), (1, 28.5, 28), "1x28x28"]:
        with pytest.raises(KdvizError):
            create_model("lenet", 10, shape)
    for k in [0, -1, 2.0, True]:
        with pytest.raises(KdvizError):
            create_model("lenet", k, (1, 28, 28))


def test_register_model_adds_a_builder():
    @register_model("tiny-test-net")
    def tiny_test_net(name, num_classes, in_shape):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)
        )

    try:
        assert "tiny-test-net" in list_models()
        assert create_model("tiny-test-net", 4, (1, 2, 2))(torch.zeros(1, 1, 2, 2)).shape == (1, 4)
        with pytest.raises(ValueError):
            register_model("tiny-test-net")(tiny_test_net)
    finally:
        from kdviz import models

        models._MODELS.pop("tiny-test-net")


# --- cards -------------------------------------------------------------------------------------


def test_card_round_trip_keeps_unknown_keys():
    card = _card(in_shape=(1, 28, 28), name="t")
    assert card.in_shape == [1, 28, 28] and card.kdviz_version == __version__
    assert card.created.endswith("+00:00")  # ISO 8601, UTC
    data = card.to_dict()
    assert "extra" not in data and data["kind"] == "model"
    data["future_field"] = {"x": 1}
    back = ModelCard.from_dict(json.loads(json.dumps(data)))
    assert back.extra == {"future_field": {"x": 1}}
    back.extra = {}
    assert back == card
    assert ModelCard.from_dict(data).to_dict()["future_field"] == {"x": 1}


def test_card_validation():
    good = _card().to_dict()
    for key in ["arch", "num_classes", "in_shape", "mean", "std"]:
        data = dict(good)
        del data[key]
        with pytest.raises(KdvizError) as err:
            ModelCard.from_dict(data)
        assert key in _one_sentence(err)
    for key, value in [
        ("num_classes", "7"),
        ("in_shape", [1, 8]),
        ("mean", [0.5, 0.5]),
        ("std", [0.0]),
        ("class_names", ["a"]),
        ("kind", "zoo"),
        ("arch_kwargs", []),
    ]:
        with pytest.raises(KdvizError):
            ModelCard.from_dict({**good, key: value})
    with pytest.raises(KdvizError):
        ModelCard.from_dict([good])
    ensemble = {**good, "kind": "ensemble", "members": []}  # members may be filled in later
    assert ModelCard.from_dict(ensemble).kind == "ensemble"
    minimal = {k: good[k] for k in ["arch", "num_classes", "in_shape", "mean", "std"]}
    assert ModelCard.from_dict(minimal).class_names == [str(i) for i in range(K)]


# --- checkpoints -------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    card = _card("cnn-wide", in_shape=(1, 8, 8), arch_kwargs={"dropout": 0.3})
    model = create_model("cnn-wide", K, (1, 8, 8), dropout=0.3)
    model.train()
    model(torch.randn(8, 1, 8, 8))  # move BatchNorm running stats away from their init
    model.eval()
    stem = save_checkpoint(model, card, tmp_path / "sub" / "teacher")
    assert stem == tmp_path / "sub" / "teacher"
    assert sorted(p.name for p in stem.parent.iterdir()) == ["teacher.json", "teacher.safetensors"]
    assert card.name == "teacher" and card.weights_sha256 == weights_hash(model)

    rng_before = torch.random.get_rng_state()
    loaded, loaded_card = load_checkpoint(stem)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # loading leaves the RNG alone
    assert not loaded.training and isinstance(loaded, type(model))
    assert loaded.dropout.p == 0.3
    assert loaded_card == card and load_card(stem) == card
    assert weights_hash(loaded) == card.weights_sha256
    x = torch.randn(5, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    saved = json.loads((tmp_path / "sub" / "teacher.json").read_text())
    assert saved["arch"] == "cnn-wide" and saved["weights_sha256"] == card.weights_sha256
    # the file is a plain contiguous tensor dict
    assert set(load_file(str(tmp_path / "sub" / "teacher.safetensors"))) == set(model.state_dict())


def test_save_overwrites_and_failed_save_keeps_old_files(tmp_path, monkeypatch):
    _, stem = _saved(tmp_path / "m", seed=0)
    first = (tmp_path / "m.safetensors").read_bytes(), (tmp_path / "m.json").read_text()
    model, _ = _saved(tmp_path / "m", seed=1)  # overwrite works
    assert weights_hash(load_checkpoint(stem)[0]) == weights_hash(model)
    second = (tmp_path / "m.safetensors").read_bytes(), (tmp_path / "m.json").read_text()
    assert second != first

    import kdviz.models as models

    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(models, "save_file", broken_save_file)
    with pytest.raises(OSError):
        _saved(tmp_path / "m", seed=2)
    assert ((tmp_path / "m.safetensors").read_bytes(), (tmp_path / "m.json").read_text()) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no tmp left


def test_save_unwraps_distributed_wrappers(tmp_path):
    class Wrapper(nn.Module):  # DistributedDataParallel's state dict keys start with "module."
        def __init__(self, module):
            super().__init__()
            self.module = module

    torch.manual_seed(0)
    model = create_model("lenet", K, (1, 8, 8))
    stem = save_checkpoint(Wrapper(model), _card("lenet"), tmp_path / "w")
    loaded, card = load_checkpoint(stem)
    assert weights_hash(loaded) == weights_hash(model) == card.weights_sha256


def test_save_refuses_a_card_that_does_not_fit(tmp_path):
    model = create_model("mlp-30-30", K, (1, 8, 8))
    with pytest.raises(KdvizError):
        save_checkpoint(model, _card("mlp-40-40"), tmp_path / "m")
    with pytest.raises(KdvizError):
        save_checkpoint(model, _card(num_classes=K + 1), tmp_path / "m")
    with pytest.raises(KdvizError):
        save_checkpoint(model, _card(kind="ensemble"), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_every_ref_form_resolves(tmp_path, monkeypatch):
    pretrained = tmp_path / "pretrained"
    monkeypatch.setattr(paths, "PRETRAINED_DIR", pretrained)
    _, stem = _saved(tmp_path / "local")
    for ref in [stem, str(stem), f"{stem}.safetensors", f"{stem}.json", Path(f"{stem}.json")]:
        assert resolve_checkpoint(ref) == stem
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("local").resolve() == stem
    assert resolve_checkpoint("local.json").resolve() == stem

    shipped = _saved(pretrained / "shipped")[1]
    mine = _saved(paths.checkpoints_dir() / "mine")[1]
    in_run = _saved(paths.runs_dir() / "run-1" / "student")[1]
    assert resolve_checkpoint("shipped") == shipped
    assert resolve_checkpoint("shipped.safetensors") == shipped
    assert resolve_checkpoint("mine") == mine
    assert resolve_checkpoint("mine.json") == mine
    assert resolve_checkpoint("student") == in_run
    assert resolve_checkpoint("run-1/student") == in_run
    assert resolve_checkpoint("run-1/student.safetensors") == in_run

    # a bare name present in several places: pretrained wins over the user's checkpoints
    _saved(paths.checkpoints_dir() / "shipped")
    assert resolve_checkpoint("shipped") == shipped

    with pytest.raises(KdvizError) as err:
        resolve_checkpoint("nowhere")
    msg = _one_sentence(err)
    assert "nowhere" in msg and str(pretrained) in msg and str(paths.checkpoints_dir()) in msg
    assert str(paths.runs_dir()) in msg
    with pytest.raises(KdvizError):
        resolve_checkpoint(stem.with_name("local.pt"))  # the named file must exist
    with pytest.raises(KdvizError):
        resolve_checkpoint("")


def test_ensemble_card_loads_as_mean_of_log_softmax(tmp_path):
    folder = tmp_path / "zoo"
    a, _ = _saved(folder / "a", "mlp-30-30", seed=1)
    b, _ = _saved(folder / "members" / "b", "lenet", seed=2)
    card = _card("ensemble", name="duo", members=["a", str(folder / "members" / "b.safetensors")])
    stem = save_ensemble_card(card, folder / "duo")
    assert not (folder / "duo.safetensors").exists()
    data = json.loads((folder / "duo.json").read_text())
    assert data["kind"] == "ensemble" and data["members"] == ["a", "members/b"]

    folder.rename(tmp_path / "moved")  # members are relative, so the folder can move
    model, loaded_card = load_checkpoint(tmp_path / "moved" / "duo.json")
    assert isinstance(model, Ensemble) and not model.training and len(model.members) == 2
    assert loaded_card.kind == "ensemble" and loaded_card.name == "duo"
    x = torch.randn(4, 1, 8, 8)
    with torch.inference_mode():
        expected = (F.log_softmax(a(x), dim=1) + F.log_softmax(b(x), dim=1)) / 2
        got = model(x)
    assert got.shape == (4, K)
    torch.testing.assert_close(got, expected)
    assert stem.name == "duo"


def test_ensemble_member_from_pretrained_stays_a_bare_name(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PRETRAINED_DIR", tmp_path / "pretrained")
    _saved(tmp_path / "pretrained" / "shipped")
    _saved(paths.checkpoints_dir() / "mine")
    stem = save_ensemble_card(
        _card("ensemble", members=["shipped", "mine"]), paths.checkpoints_dir() / "pair"
    )
    assert load_card(stem).members == ["shipped", "mine"]
    model, _ = load_checkpoint("pair")
    assert isinstance(model, Ensemble) and len(model.members) == 2


def test_ensemble_card_checks_members(tmp_path):
    _saved(tmp_path / "a")
    _saved(tmp_path / "wide", num_classes=K + 3)
    with pytest.raises(KdvizError):
        save_ensemble_card(_card("ensemble", members=["a", "wide"]), tmp_path / "bad")
    with pytest.raises(KdvizError):
        save_ensemble_card(_card("ensemble", members=["a", "ghost"]), tmp_path / "bad")
    with pytest.raises(KdvizError):
        save_ensemble_card(_card("ensemble", members=[]), tmp_path / "bad")
    assert not (tmp_path / "bad.json").exists()
    # the engine's way: copy a member's card, make it an ensemble, fill in the members
    ens = ModelCard.from_dict({**load_card(tmp_path / "a").to_dict(), "kind": "ensemble"})
    ens.members = ["a"]
    save_ensemble_card(ens, tmp_path / "copy")
    copied = load_card(tmp_path / "copy")
    assert copied.arch == "ensemble" and copied.weights_sha256 == "" and copied.members == ["a"]
    assert isinstance(load_checkpoint(tmp_path / "copy")[0], Ensemble)
    (tmp_path / "empty.json").write_text(json.dumps({**copied.to_dict(), "members": []}))
    with pytest.raises(KdvizError):
        load_checkpoint(tmp_path / "empty")
    # a card that lists itself is refused at load time, not looped over
    save_ensemble_card(_card("ensemble", members=["a"]), tmp_path / "loop")
    data = json.loads((tmp_path / "loop.json").read_text())
    (tmp_path / "loop.json").write_text(json.dumps({**data, "members": ["a", "loop"]}))
    with pytest.raises(KdvizError):
        load_checkpoint(tmp_path / "loop")


def test_weights_hash_tracks_weights():
    torch.manual_seed(0)
    model = create_model("resnet8", K, (3, 32, 32)).eval()
    first = weights_hash(model)
    assert len(first) == 64 and int(first, 16) >= 0
    with torch.inference_mode():
        model(torch.randn(2, 3, 32, 32))  # eval forward changes nothing
    assert weights_hash(model) == first
    with torch.no_grad():
        model.head.weight[0, 0] += 1e-3
    changed = weights_hash(model)
    assert changed != first
    with torch.no_grad():
        model.head.weight[0, 0] -= 1e-3
    assert weights_hash(model) == first
    model.train()
    model(torch.randn(2, 3, 32, 32))  # train forward moves BatchNorm buffers
    assert weights_hash(model) != first


def test_list_checkpoints(tmp_path, monkeypatch):
    pretrained = tmp_path / "pretrained"
    monkeypatch.setattr(paths, "PRETRAINED_DIR", pretrained)
    _saved(pretrained / "teacher")
    _saved(paths.checkpoints_dir() / "teacher")  # same name as a shipped one
    _saved(paths.checkpoints_dir() / "mine")
    _saved(paths.runs_dir() / "run-1" / "student")
    _saved(paths.runs_dir() / "run-2" / "student")
    (paths.runs_dir() / "run-1" / "config.json").write_text('{"epochs": 3}')  # not a card
    (paths.checkpoints_dir() / "broken.json").write_text("{not json")
    (paths.checkpoints_dir() / "orphan.json").write_text(
        json.dumps(_card().to_dict())
    )  # no weights
    save_ensemble_card(_card("ensemble", members=["mine"]), paths.checkpoints_dir() / "ens")

    found = list_checkpoints()
    names = [name for name, _, _ in found]
    assert len(names) == len(set(names)) == 6
    assert names[0] == "teacher" and "mine" in names and "ens" in names
    assert "run-1/student" in names and "run-2/student" in names
    for name, stem, card in found:
        assert resolve_checkpoint(name) == stem
        assert isinstance(card, ModelCard)


# --- safety ------------------------------------------------------------------------------------


def test_truncated_safetensors(tmp_path):
    _, stem = _saved(tmp_path / "m")
    weights = tmp_path / "m.safetensors"
    data = weights.read_bytes()
    for cut in [len(data) // 2, 12, 0]:
        weights.write_bytes(data[:cut])
        with pytest.raises(KdvizError) as err:
            load_checkpoint(stem)
        assert "truncated" in _one_sentence(err) and err.value.__cause__ is not None


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"card"', "\xff\xfe"])
def test_card_that_is_not_json(tmp_path, text):
    _, stem = _saved(tmp_path / "m")
    (tmp_path / "m.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(KdvizError) as err:
        load_checkpoint(stem)
    _one_sentence(err)


def test_card_missing_fields(tmp_path):
    _, stem = _saved(tmp_path / "m")
    data = json.loads((tmp_path / "m.json").read_text())
    del data["num_classes"]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(KdvizError) as err:
        load_checkpoint(stem)
    assert "num_classes" in _one_sentence(err)
    (tmp_path / "m.json").unlink()
    with pytest.raises(KdvizError) as err:
        load_checkpoint(tmp_path / "m.safetensors")
    assert "card" in _one_sentence(err)


def _edit_card(stem: Path, **changes) -> None:
    path = stem.with_name(stem.name + ".json")
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_wrong_shapes_and_missing_keys(tmp_path):
    _, stem = _saved(tmp_path / "m")
    _edit_card(stem, arch="mlp-40-40", weights_sha256="")
    with pytest.raises(KdvizError) as err:
        load_checkpoint(stem)
    assert "wrong shapes" in _one_sentence(err)

    _, stem = _saved(tmp_path / "n")
    weights = tmp_path / "n.safetensors"
    state = load_file(str(weights))
    state.pop("head.bias")
    state["stray"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(KdvizError) as err:
        load_checkpoint(stem)
    msg = _one_sentence(err)
    assert "head.bias" in msg and "stray" in msg


def test_class_count_mismatch(tmp_path):
    _, stem = _saved(tmp_path / "m")
    _edit_card(stem, num_classes=K + 1, class_names=[str(i) for i in range(K + 1)])
    with pytest.raises(KdvizError) as err:
        load_checkpoint(stem)
    assert "classes" in _one_sentence(err)
    _edit_card(stem, num_classes=K, class_names=["a", "b"])
    with pytest.raises(KdvizError):
        load_checkpoint(stem)


def test_weights_replaced_behind_the_cards_back(tmp_path):
    _saved(tmp_path / "m", seed=0)
    _saved(tmp_path / "other", seed=1)
    os.replace(tmp_path / "other.safetensors", tmp_path / "m.safetensors")
    with pytest.raises(KdvizError) as err:
        load_checkpoint(tmp_path / "m")
    assert "weights_sha256" in _one_sentence(err)


def test_card_without_weights(tmp_path):
    _, stem = _saved(tmp_path / "m")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(KdvizError) as err:
        load_checkpoint(stem)
    assert "no weights" in _one_sentence(err)


def test_foreign_pt_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet", K, (1, 8, 8)).eval()
    card = _card("lenet")
    (tmp_path / "foreign.json").write_text(json.dumps(card.to_dict()))
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3},
        tmp_path / "foreign.pt",
    )
    loaded, _ = load_checkpoint(tmp_path / "foreign.pt")
    x = torch.randn(2, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    assert resolve_checkpoint(tmp_path / "foreign.json") == tmp_path / "foreign"


class _Evil:
    """Unpickling this would run its __reduce__ payload (create the marker file)."""

    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        return self.payload


def _evil_files(tmp_path: Path, marker: Path) -> dict[str, callable]:
    def via_torch_save(path):  # zip format, os.system payload
        torch.save({"w": torch.zeros(1), "x": _Evil((os.system, (f"touch {marker}",)))}, path)

    def via_pickle(path):  # legacy pickle, builtins.open payload
        with open(path, "wb") as handle:
            pickle.dump({"w": _Evil((open, (str(marker), "w")))}, handle, protocol=2)

    def whole_module(path):  # a pickled nn.Module is code too
        torch.save(create_model("lenet", K, (1, 8, 8)), path)

    return {"torch_save": via_torch_save, "pickle": via_pickle, "module": whole_module}


@pytest.mark.parametrize("kind", ["torch_save", "pickle", "module"])
def test_pickle_with_code_is_never_executed(tmp_path, kind):
    marker = tmp_path / "PWNED"
    (tmp_path / "evil.json").write_text(json.dumps(_card("lenet").to_dict()))
    _evil_files(tmp_path, marker)[kind](tmp_path / "evil.pt")
    assert not marker.exists()
    for ref in [tmp_path / "evil.pt", tmp_path / "evil"]:
        with pytest.raises(KdvizError) as err:
            load_checkpoint(ref)
        assert "never unpickles" in _one_sentence(err)
        assert err.value.__cause__ is not None
    # a pickle dressed up as safetensors is refused too
    os.replace(tmp_path / "evil.pt", tmp_path / "evil.safetensors")
    with pytest.raises(KdvizError):
        load_checkpoint(tmp_path / "evil")
    assert not marker.exists()


def test_pt_with_non_tensor_values(tmp_path):
    (tmp_path / "odd.json").write_text(json.dumps(_card("lenet").to_dict()))
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(KdvizError) as err:
        load_checkpoint(tmp_path / "odd")
    assert "state dict" in _one_sentence(err)
