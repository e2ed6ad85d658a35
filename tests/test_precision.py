"""kdviz.precision: resolving --precision, autocast steps with fp32 losses, channels_last, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdviz.cli import main
from kdviz.engine import DistillConfig, fit, make_train_step
from kdviz.errors import KdvizError
from kdviz.losses import create_loss, dkd_loss, kd_loss, logit_mse_loss
from kdviz.models import load_card
from kdviz.precision import Precision, prepare_model, resolve_precision
from kdviz.precision import make_train_step as amp_train_step

CPU = torch.device("cpu")
DIGITS = ["--teacher", "digits-teacher", "--student", "mlp-30-30", "--dataset", "digits"]


def test_resolve_on_cpu():
    assert resolve_precision("auto", CPU).name == "fp32"
    assert resolve_precision("fp32", CPU).name == "fp32"
    bf16 = resolve_precision("bf16", CPU)
    assert (bf16.name, bf16.dtype, bf16.channels_last) == ("bf16", torch.bfloat16, False)
    with pytest.raises(KdvizError, match="fp16 training needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(KdvizError, match="Unknown precision"):
        resolve_precision("fp8", CPU)


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_bf16_support(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: has_bf16)
    prec = resolve_precision("auto", torch.device("cuda"))
    assert prec.name == expected and prec.channels_last  # NHWC on CUDA only
    assert resolve_precision("fp16", torch.device("cuda")).name == "fp16"


class _Huge(nn.Module):
    """Logits of magnitude 1e4 in a reduced dtype, as an fp16 / bf16 forward can produce."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, -1.0, 0.5]]))
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] * self.w * 1e4).to(self.dtype)  # (B, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["kd", "mse", "dkd"])
def test_losses_on_reduced_precision_logits_of_1e4_are_fp32_and_finite(dtype, method):
    x = torch.tensor([[1.0], [-1.0]])
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, 0.0, -1e4]]).to(dtype)
    y = torch.tensor([0, 2])
    kwargs = {"kd": {"temperature": 4.0, "alpha": 0.9}, "mse": {"alpha": 0.5}}
    kwargs["dkd"] = {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}
    model = _Huge(dtype)
    reduced = model(x).detach()  # (2, 3) in fp16 / bf16
    # the oracle: the same loss on the same (rounded) logits in float64
    oracle = create_loss(method, **kwargs[method])(reduced.double(), teacher.double(), y)
    step = amp_train_step(
        model,
        create_loss(method, **kwargs[method]),
        torch.optim.SGD(model.parameters(), lr=1e-12),
        Precision("fp32", "cpu"),
    )
    parts = step(x, teacher, y)
    assert parts["loss"].dtype == torch.float32
    assert torch.isfinite(parts["loss"]) and torch.isfinite(model.w.grad).all()
    torch.testing.assert_close(parts["loss"].double(), oracle["loss"], rtol=1e-5, atol=0)
    if dtype == torch.float16:  # the reason for the cast: the same math in fp16 overflows
        naive = {"kd": kd_loss, "mse": logit_mse_loss, "dkd": dkd_loss}[method]
        assert not torch.isfinite(naive(reduced, teacher, y, **kwargs[method])["loss"])


def test_bf16_step_runs_the_forward_in_bf16_and_the_loss_in_fp32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    seen = []
    model[3].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    loss_fn = create_loss("kd", temperature=4.0, alpha=0.9)
    step = amp_train_step(
        model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1), resolve_precision("bf16", CPU)
    )
    x, t, y = torch.randn(5, 1, 4, 4), torch.randn(5, 3) * 1e4, torch.randint(0, 3, (5,))
    before = model[3].weight.detach().clone()
    parts = step(x, t, y)
    assert seen == [torch.bfloat16] and parts["loss"].dtype == torch.float32
    assert torch.isfinite(parts["loss"]) and not torch.equal(before, model[3].weight)
    assert model[3].weight.dtype == torch.float32  # master weights stay fp32


def test_fp32_step_matches_the_engine_step_exactly():
    def trained(make):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        step = make(model, create_loss("kd", temperature=2.0, alpha=0.5), opt)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            x = torch.randn(6, 1, 4, 4, generator=gen)
            step(x, torch.randn(6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen))
        return model[1].weight.detach()

    fp32 = Precision("fp32", "cpu")
    mine = trained(lambda m, loss, opt: amp_train_step(m, loss, opt, fp32))
    assert torch.equal(mine, trained(make_train_step))


def test_channels_last_step_matches_contiguous():
    def trained(channels_last: bool):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 36, 5))
        prec = Precision("fp32", "cpu", channels_last=channels_last)
        prepare_model(model, prec)
        if channels_last:
            assert model[0].weight.is_contiguous(memory_format=torch.channels_last)

        def loss_fn(logits, _t, y):
            task = F.cross_entropy(logits, y)
            return {"loss": task, "kd_loss": task * 0, "task_loss": task}

        step = amp_train_step(model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1), prec)
        gen = torch.Generator().manual_seed(0)
        for _ in range(2):
            step(torch.randn(4, 3, 6, 6, generator=gen), None, torch.randint(0, 5, (4,)))
        return model[2].weight.detach()

    torch.testing.assert_close(trained(True), trained(False), rtol=1e-5, atol=1e-6)


def test_distill_in_bf16_on_cpu_has_finite_losses_close_to_fp32():
    def losses(prec: str) -> list[float]:
        seen: list[float] = []
        cfg = DistillConfig(
            teacher="digits-teacher",
            arch="mlp-30-30",
            dataset="digits",
            epochs=1,
            precision=prec,
            log_every=1,
        )
        result = fit(cfg, on_step=lambda m: seen.append(m["loss"]), save=prec == "bf16")
        assert result.status == "done"
        return seen

    bf16, fp32 = losses("bf16"), losses("fp32")
    assert len(bf16) == len(fp32) > 5 and all(map(torch.isfinite, torch.tensor(bf16)))
    # bf16 has 8 significant bits: the curves agree to a few percent, not exactly
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=0.05, atol=0)
    assert bf16 != fp32
    assert load_card("digits-mlp-30-30-kd-T4-s0").training["precision"] == "bf16"


def test_cli_distill_precision_bf16(capsys):
    assert main(["distill", *DIGITS, "--epochs", "1", "--precision", "bf16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and out["world_size"] == 1
    assert all(map(torch.isfinite, torch.tensor([h["nll"] for h in out["history"]])))


def test_cli_refuses_fp16_on_cpu(capsys):
    assert (
        main(["distill", *DIGITS, "--epochs", "1", "--precision", "fp16", "--device", "cpu"]) == 2
    )
    assert "fp16 training needs a CUDA GPU" in capsys.readouterr().err
    from kdviz.runs import RunStore

    assert RunStore().list_runs() == []  # refused before a run is recorded


def test_gpu_speed_benchmark_runs_on_cpu_and_counts_the_mlp_flops():
    import importlib.util

    from kdviz.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "gpu_speed", REPO_ROOT / "benchmarks" / "gpu_speed.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--batches", "4", "--steps", "1", "--warmup", "1", "--students", "mlp", "--json"]
    argv += ["--peak-size", "256", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        result = bench.main(argv)
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into later tests
    cases = result["cases"]
    assert [c["path"] for c in cases] == ["fp32", "bf16"]  # no CUDA graphs on the CPU
    assert result["peak_dtype"] == "float32" and result["peak_tflops"] > 0
    # oracle: 2 x 800 matmul FLOPs at batch 4 (forward, weight grads = forward, input grads of
    # layers 2 and 3; the first layer's input needs none)
    sizes = [784, 800, 800, 10]
    fwd = sum(2 * 4 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    flops = 2 * fwd + sum(2 * 4 * a * b for a, b in zip(sizes[1:-1], sizes[2:], strict=False))
    assert all(c["step_gflop"] == round(flops / 1e9, 6) for c in cases)
    assert all(c["images_per_s"] > 0 and c["peak_fraction"] > 0 for c in cases)
    assert result["speedups"][0]["batch"] == 4


def test_an_empty_shard_steps_with_zero_gradients():
    # a last global batch smaller than the world size leaves some ranks an empty slice; they
    # must still back-propagate (DDP all-reduces every rank's gradients), and add nothing
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    step = amp_train_step(
        model,
        create_loss("kd", temperature=4.0, alpha=0.9),
        torch.optim.SGD(model.parameters(), lr=0.1),
        Precision("fp32", "cpu"),
        loss_weight=lambda: 0.0,
    )
    before = model[1].weight.detach().clone()
    parts = step(torch.zeros(0, 1, 2, 2), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert parts["loss"].item() == 0.0
    assert model[1].weight.grad is not None and not model[1].weight.grad.any()
    assert torch.equal(before, model[1].weight)
