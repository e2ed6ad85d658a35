"""The parameter limit for foreign architectures and imported state dicts is checked before any
weight is allocated: torchvision / timm models are counted on the meta device, state dicts from
their file's header (safetensors) or a memory map (.pt). The counts are checked against the
models torchvision builds directly."""

from __future__ import annotations

import pytest
import torch

from kdviz import importers, models, paths
from kdviz.errors import KdvizError


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch):
    monkeypatch.delenv("KDVIZ_MAX_PARAMS", raising=False)


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg and msg.endswith("."), msg
    return msg


def _record_devices(monkeypatch, module, attr: str) -> list[str]:
    """Wrap module.attr so each call records the device a new tensor would get right then."""
    devices: list[str] = []
    real = getattr(module, attr)

    def recording(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, recording)
    return devices


def test_torchvision_model_over_the_limit_is_refused_before_a_real_build(monkeypatch):
    import torchvision

    oracle = sum(p.numel() for p in torchvision.models.resnet18(num_classes=10).parameters())
    devices = _record_devices(monkeypatch, torchvision.models, "get_model")
    monkeypatch.setattr(models, "MAX_PARAMS", oracle - 1)
    with pytest.raises(KdvizError) as err:
        models.create_model("torchvision:resnet18", 10, (3, 32, 32))
    msg = _one_sentence(err)
    assert (
        f"{oracle:,} parameters" in msg and f"{oracle - 1:,}" in msg and "KDVIZ_MAX_PARAMS" in msg
    )
    assert devices == ["meta"]  # counted on the meta device, never built for real
    monkeypatch.setattr(models, "MAX_PARAMS", oracle)  # exactly at the limit is allowed
    devices.clear()
    model = models.create_model("torchvision:resnet18", 10, (3, 32, 32))
    assert devices == ["meta", "cpu"] and sum(p.numel() for p in model.parameters()) == oracle
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_builders_that_read_back_tensors_and_huge_models_never_build_for_real(monkeypatch):
    import torchvision

    devices = _record_devices(monkeypatch, torchvision.models, "get_model")
    # regnet computes its widths with torch and reads them back (.tolist()), which the meta
    # device refuses; it is counted with only its weights on meta instead
    monkeypatch.setattr(models, "MAX_PARAMS", 1000)
    with pytest.raises(KdvizError) as err:
        models.create_model("torchvision:regnet_x_400mf", 10, (3, 32, 32))
    assert "over kdviz's limit of 1,000" in _one_sentence(err)
    assert devices and "cpu" not in devices
    # at the default limit, ViT-H/14 (632M parameters, 2.5 GB as float32) is a sentence
    monkeypatch.setattr(models, "MAX_PARAMS", 500_000_000)
    devices.clear()
    with pytest.raises(KdvizError) as err:
        models.create_model("torchvision:vit_h_14", 1000, (3, 224, 224))
    assert "632,045,800 parameters" in _one_sentence(err) and devices == ["meta"]


def test_meta_count_leaves_the_rng_stream_alone(monkeypatch):
    import torchvision

    torch.manual_seed(0)
    ours = models.create_model("torchvision:resnet18", 10, (3, 32, 32))
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=10)
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_timm_model_over_the_limit_is_refused_on_meta(monkeypatch):
    import timm

    oracle = sum(
        p.numel()
        for p in timm.create_model("resnet10t", pretrained=False, num_classes=5).parameters()
    )
    devices = _record_devices(monkeypatch, timm, "create_model")
    monkeypatch.setattr(models, "MAX_PARAMS", oracle - 1)
    with pytest.raises(KdvizError) as err:
        models.create_model("timm:resnet10t", 5, (3, 32, 32))
    assert f"{oracle:,} parameters" in _one_sentence(err)
    assert devices and set(devices) == {"meta"}


def _lenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return models.create_model("lenet", 10, (1, 8, 8)).state_dict()


def test_state_dict_over_the_limit_is_refused_unread(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    state = _lenet_state()
    values = sum(t.numel() for t in state.values())  # the oracle: what the files hold
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    import safetensors.torch

    reads = _record_devices(monkeypatch, safetensors.torch, "load_file")
    builds = _record_devices(monkeypatch, models, "create_model")
    loads: list[dict] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(kw) or real_load(*a, **kw))
    monkeypatch.setattr(models, "MAX_PARAMS", values - 1)
    for file in ("w.safetensors", "w.pt"):
        with pytest.raises(KdvizError) as err:
            importers.import_source(tmp_path / file, "big", arch="lenet", in_shape="1x8x8")
        msg = _one_sentence(err)
        assert f"{file} holds {values:,} values" in msg and f"{values - 1:,}" in msg
    assert reads == [] and builds == []  # safetensors: header only; nothing was built
    assert [kw.get("mmap") for kw in loads] == [True]  # .pt: mapped, not read
    assert not models._stem_exists(paths.checkpoints_dir() / "big")
    monkeypatch.setattr(models, "MAX_PARAMS", values)  # at the limit: imported, weights equal
    for i, file in enumerate(("w.safetensors", "w.pt")):
        importers.import_source(tmp_path / file, f"ok{i}", arch="lenet", in_shape="1x8x8")
        assert models.load_card(f"ok{i}").weights_sha256 == models._hash_state(state)


def test_legacy_pt_format_still_imports(tmp_path):
    """torch's pre-1.6 format cannot be mapped; it is read whole, as before."""
    state = _lenet_state()
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    importers.import_source(tmp_path / "old.pt", "old", arch="lenet", in_shape="1x8x8")
    assert models.load_card("old").weights_sha256 == models._hash_state(state)
