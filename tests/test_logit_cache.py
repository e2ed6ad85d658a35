"""The sharded, memory-mapped teacher-logit cache: exact round trip, the same training as the
in-memory path, torn shards rebuilt, and a streamed read that never holds the whole table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kdviz import logit_cache
from kdviz.data import load_dataset
from kdviz.engine import DistillConfig, TrainConfig, _logit_cache_path, fit, model_logits
from kdviz.models import card_fingerprint, load_checkpoint
from kdviz.paths import REPO_ROOT, cache_dir, checkpoints_dir


@pytest.fixture
def teacher() -> str:
    stem = checkpoints_dir() / "lc-teacher"
    cfg = TrainConfig(
        dataset="digits", arch="mlp-30-30", epochs=1, batch_size=64, device="cpu", out=str(stem)
    )
    assert fit(cfg).status == "done"
    return str(stem)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of ROW_ALIGN (1,024) rows: the digits training split (1,293 rows) takes two."""
    monkeypatch.setattr(logit_cache, "SHARD_BYTES", 1)


def _teacher_table(teacher: str):
    model, card = load_checkpoint(teacher)
    ds = load_dataset("digits", "train")
    return model, card, ds, card_fingerprint(teacher)


def test_sharded_write_and_mmap_read_equal_the_in_memory_logits(teacher, small_shards):
    model, card, ds, fp = _teacher_table(teacher)
    table = logit_cache.sharded_model_logits(model, card, ds, fingerprint=fp)
    memory = model_logits(model, card, ds, fingerprint=fp, use_cache=False)  # (N, K)
    assert table.shape == tuple(memory.shape) and len(table.shards) == 2
    assert all(isinstance(s, np.memmap) for s in table.shards)
    assert torch.equal(table.materialize(), memory)
    rows = torch.tensor([len(ds) - 1, 0, 1023, 1024, 7, 1024])  # both shards, repeats, out of order
    assert torch.equal(table.take(rows), memory[rows])
    assert torch.equal(table.rows_slice(1000, 1100), memory[1000:1100])  # across the boundary
    # under the .pt cache's key, as a folder: KDVIZ_HOME/cache/logits/<key>/
    assert table.directory == _logit_cache_path(fp, card, ds).with_suffix("")
    assert (table.directory / logit_cache.INDEX).exists()
    # a second call reads the cache: the teacher is not run again
    calls = []
    again = logit_cache.sharded_model_logits(
        model, card, ds, fingerprint=fp, on_batch=lambda *a: calls.append(a)
    )
    assert calls == [] and torch.equal(again.materialize(), memory)


def _student_weights(teacher: str, out: str) -> dict[str, torch.Tensor]:
    cfg = DistillConfig(
        dataset="digits", arch="mlp-30-30", teacher=teacher, epochs=1, batch_size=64,
        device="cpu", seed=3, out=out, omit_classes=(3,),
    )  # fmt: skip  # without class 3: the transfer rows are not the split's rows 0..n-1
    result = fit(cfg)
    assert result.status == "done"
    n = int((load_dataset("digits", "train").labels != 3).sum())  # the transfer set's images
    speed = n / result.metrics["train_seconds"]
    assert result.metrics["images_per_s"] == pytest.approx(speed)
    return load_file(out + ".safetensors")


def test_streamed_distillation_ends_with_the_in_memory_weights(
    teacher, small_shards, monkeypatch, tmp_path
):
    memory = _student_weights(teacher, str(tmp_path / "memory"))
    monkeypatch.setenv("KDVIZ_SHARD_BYTES", "1")  # every table is "large": the sharded path
    seen = []
    real = logit_cache.ShardedLogits.take
    monkeypatch.setattr(
        logit_cache.ShardedLogits, "take", lambda self, *a: seen.append(1) or real(self, *a)
    )
    streamed = _student_weights(teacher, str(tmp_path / "streamed"))
    labels = load_dataset("digits", "train").labels
    steps = -(-int((labels != 3).sum()) // 64)
    assert len(seen) == steps  # every step reads its batch from the shards
    assert len(list((cache_dir() / "logits").glob("*/index.json"))) == 1  # the training split's
    assert memory.keys() == streamed.keys()
    for name in memory:
        assert torch.equal(memory[name], streamed[name]), name


def test_a_torn_shard_is_rebuilt_never_trusted(teacher, small_shards):
    model, card, ds, fp = _teacher_table(teacher)
    table = logit_cache.sharded_model_logits(model, card, ds, fingerprint=fp)
    expected = table.materialize().clone()
    shard = table.directory / "shard-00001.npy"
    del table
    shard.write_bytes(shard.read_bytes()[:-40])  # a write cut short: one row missing
    assert logit_cache.open_shards(shard.parent, len(ds), card.num_classes) is None
    calls = []
    rebuilt = logit_cache.sharded_model_logits(
        model, card, ds, fingerprint=fp, on_batch=lambda *a: calls.append(a)
    )
    assert calls and calls[-1][0] == len(ds)  # the teacher ran again over every image
    assert torch.equal(rebuilt.materialize(), expected)
    # a second writer (another run on the same teacher) finding a complete cache keeps it
    other = [np.zeros((1024, 10), np.float32), np.zeros((len(ds) - 1024, 10), np.float32)]
    logit_cache.write_shards(rebuilt.directory, other, len(ds), 10, rebuilt.shard_rows)
    kept = logit_cache.open_shards(rebuilt.directory, len(ds), card.num_classes)
    assert torch.equal(kept.materialize(), expected)
    assert not list(rebuilt.directory.parent.glob("*.tmp*"))
    (rebuilt.directory / logit_cache.INDEX).unlink()  # no index: not a cache either
    assert logit_cache.open_shards(rebuilt.directory, len(ds), card.num_classes) is None


def test_the_streamed_read_never_holds_the_whole_table(tmp_path, monkeypatch):
    rows, classes = 200_000, 50  # 40 MB of float32
    full_bytes = rows * classes * 4
    monkeypatch.setattr(logit_cache, "SHARD_BYTES", 2 << 20)
    shard_rows = logit_cache.shard_rows_for(classes)  # 10,240 rows, 2 MB per shard

    def chunks():  # row r holds r / 1000 + column / 100: every value checkable
        for start in range(0, rows, shard_rows):
            r = np.arange(start, min(rows, start + shard_rows), dtype=np.float32)[:, None]
            yield r / 1000 + np.arange(classes, dtype=np.float32) / 100

    tracemalloc.start()
    logit_cache.write_shards(tmp_path / "big", chunks(), rows, classes, shard_rows)
    table = logit_cache.open_shards(tmp_path / "big", rows, classes)
    gen = torch.Generator().manual_seed(0)
    checksum = 0.0
    for _ in range(50):  # 50 batches of 512 random rows, as a training epoch reads them
        batch = torch.randint(0, rows, (512,), generator=gen)
        got = table.take(batch)
        want = batch[:, None].float() / 1000 + torch.arange(classes).float() / 100
        assert torch.allclose(got, want)
        checksum += float(got.sum())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert checksum > 0 and len(table.shards) == 20
    assert all(isinstance(s, np.memmap) for s in table.shards)
    assert peak < full_bytes / 8, f"peak {peak:,} bytes for a {full_bytes:,}-byte table"


def test_the_threshold_decides(monkeypatch):
    monkeypatch.delenv("KDVIZ_SHARD_BYTES", raising=False)
    assert logit_cache.threshold_bytes() == 1 << 30
    assert not logit_cache.should_shard(60_000, 10)  # MNIST: 2.4 MB stays in memory
    assert logit_cache.should_shard(1_281_167, 1000)  # ImageNet-1k train: 5.1 GB is sharded
    monkeypatch.setenv("KDVIZ_SHARD_BYTES", "1000")
    assert logit_cache.should_shard(25, 10) and not logit_cache.should_shard(24, 10)


@pytest.mark.slow
def test_torchrun_rank_0_writes_the_shards_and_rank_1_maps_them(tmp_path, monkeypatch):
    """2 gloo processes on the sharded path: one cache written by rank 0, the same weights as
    one process (fp32 tolerance: DDP sums the two halves' gradients in another order)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDVIZ_SHARD_BYTES": "1"}
    args = ["distill", "--teacher", "digits-teacher", "--student", "mlp-30-30"]
    args += ["--dataset", "digits", "--epochs", "1", "--device", "cpu", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "kdviz", *args, "--out", str(tmp_path / "ddp")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    indexes = list((cache_dir() / "logits").glob("*/index.json"))
    assert len(indexes) == 1 and json.loads(indexes[0].read_text())["meta"]["rank"] == 0
    assert not list((cache_dir() / "logits").glob("*.tmp*"))
    from kdviz.cli import main

    monkeypatch.setenv("KDVIZ_SHARD_BYTES", "1")
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    ddp, one = load_file(tmp_path / "ddp.safetensors"), load_file(tmp_path / "one.safetensors")
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-4, atol=1e-5)
