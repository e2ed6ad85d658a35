"""kdviz.distributed: shards of a global batch, DDP on gloo equal to one process, torchrun runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdviz import distributed
from kdviz.cli import main
from kdviz.distributed import DistContext, shard_bounds, strip_option
from kdviz.errors import KdvizError

REPO = Path(__file__).resolve().parents[1]
DIGITS = {"teacher": "digits-teacher", "arch": "mlp-30-30", "dataset": "digits"}


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_bounds_split_every_batch_exactly(world):
    for n in range(0, 40):
        bounds = [shard_bounds(n, world, r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_weighted_shard_means_average_to_the_global_mean():
    # DDP averages gradients over ranks; the loss of rank r's slice is a mean over n_r rows,
    # weighted by step_weight = n_r * W / B. Oracle: the mean over the whole uneven batch.
    per_row = torch.randn(13, dtype=torch.float64)  # a last batch of 13 on 2 ranks: 7 + 6
    batch = torch.arange(13)
    for world in (2, 3, 5):
        averaged = 0.0
        for rank in range(world):
            ctx = DistContext(device=torch.device("cpu"), world_size=world, rank=rank)
            idx, rows = ctx.shard(batch, per_row)
            assert torch.equal(rows, per_row[idx])
            averaged += ctx.step_weight * rows.mean() / world
        torch.testing.assert_close(averaged, per_row.mean())


def test_one_process_context_changes_nothing():
    ctx = distributed.setup(torch.device("cpu"))  # no WORLD_SIZE in the test's environment
    model = torch.nn.Linear(2, 2)
    batch, x = torch.arange(5), torch.randn(5, 2)
    assert not ctx.active and ctx.is_main and ctx.wrap(model) is model
    assert ctx.shard(batch, x, None) == (batch, x, None)
    assert ctx.loss_weight is None and ctx.describe() == ""
    hook = lambda: True  # noqa: E731
    assert ctx.wrap_stop(hook, 10) is hook


def test_batchnorm_is_synchronised_on_gpus_only_and_keeps_its_state_dict():
    from kdviz.models import create_model

    model = create_model("resnet8", 10, (3, 32, 32))
    keys = list(model.state_dict())
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert bns > 0
    assert distributed.sync_batchnorm(model, torch.device("cpu")) is model  # gloo: torch has none
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == 0
    # converting needs no GPU; the statistics then sync over NCCL in training
    assert distributed.sync_batchnorm(model, torch.device("cuda", 0)) is model  # in place
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == bns
    assert list(model.state_dict()) == keys  # checkpoints load into the plain model
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert distributed.sync_batchnorm(mlp, torch.device("cuda", 0)) is mlp


def test_strip_option_and_torchrun_command():
    argv = ["distill", "--nproc", "2", "--epochs", "3", "--nproc=4", "--json"]
    assert strip_option(argv, "--nproc") == ["distill", "--epochs", "3", "--json"]
    cmd = distributed.torchrun_command(2, ["train", "--epochs", "1"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == [
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "kdviz",
        "train",
        "--epochs",
        "1",
    ]


def test_cli_nproc_relaunches_the_same_command_under_torchrun(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    argv = ["distill", "--teacher", "digits-teacher", "--nproc", "2", "--epochs", "3"]
    assert main(argv) == 0
    assert calls == [
        distributed.torchrun_command(2, ["distill", "--teacher", "digits-teacher", "--epochs", "3"])
    ]


def test_nproc_inside_torchrun_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2"]) == 2
    assert "drop it when you launch with torchrun" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 2 processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path, kdviz_home):
    """2 x DDP (shards 64 + 64 and an uneven last 7 + 6 of 1,293 rows) == 1 x batch 128."""
    import torch.multiprocessing as mp
    from ddp_rank import rank_main  # tests/ is on sys.path, as it is in the spawned children

    from kdviz.engine import DistillConfig, fit

    mp.spawn(
        rank_main,
        args=(2, _free_port(), str(kdviz_home), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    reference = fit(DistillConfig(**DIGITS, epochs=2, batch_size=128, out=str(tmp_path / "one")))
    assert reference.world_size == 1
    ranks = [json.loads((tmp_path / f"rank{r}.result.json").read_text()) for r in range(2)]
    assert [r["status"] for r in ranks] == ["done", "done"]
    assert ranks[0]["world_size"] == 2 and ranks[0]["device"].endswith(", 2 processes")
    # rank 0 alone writes a checkpoint
    assert (tmp_path / "rank0.safetensors").exists()
    assert not list(tmp_path.glob("rank1.*.safetensors")) + list(tmp_path.glob("rank1.json"))
    assert not (tmp_path / "rank1.safetensors").exists()
    ddp, one = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "one.safetensors")
    assert ddp.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-4, atol=1e-5)
    # a cancel seen by rank 0 stops both ranks at the same step (no rank left in an all-reduce)
    assert [r["cancel_status"] for r in ranks] == ["cancelled", "cancelled"]
    assert ranks[0]["cancel_message"] == ranks[1]["cancel_message"] == "Cancelled at step 5 of 22."


@pytest.mark.slow
def test_torchrun_distill_records_one_done_run_of_world_size_2(kdviz_home):
    """The issue's done-when: torchrun --nproc_per_node 2 -m kdviz distill on the CPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDVIZ_HOME": str(kdviz_home)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "kdviz", "distill", "--teacher", "digits-teacher", "--student", "mlp-30-30"]
        + ["--dataset", "digits", "--epochs", "3", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["world_size"] == 2  # rank 0 alone prints
    runs = subprocess.run(
        [sys.executable, "-m", "kdviz", "runs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    records = json.loads(runs.stdout)
    assert [(r["status"], r["world_size"]) for r in records] == [("done", 2)]
    assert records[0]["metrics"]["epoch"] == 3
    print(f"torchrun 2 x CPU distill: {time.perf_counter() - started:.1f} s")


def test_setup_refuses_mps_for_data_parallel(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(KdvizError, match="CUDA GPUs \\(NCCL\\) or the CPU \\(gloo\\)"):
        distributed.setup(torch.device("mps"))
