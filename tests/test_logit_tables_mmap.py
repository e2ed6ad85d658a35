"""An imported logits table opens as a copy-on-write map of its stored .npz: the values and
labels round-trip exactly, the tensor's memory is the file's pages (checked in /proc/self/maps),
writes never reach the file, and a file that cannot be mapped is still read correctly."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdviz import importers, logit_tables, models
from kdviz.errors import KdvizError


def _table(n: int = 300, c: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)).astype(np.float32) * 4, rng.integers(0, c, size=n)


def _import(tmp_path: Path, name: str = "tab") -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    logits, labels = _table()
    names = [f"class {i}" for i in range(logits.shape[1])]
    np.savez(tmp_path / "src.npz", logits=logits, labels=labels, class_names=np.asarray(names))
    stem = importers.import_source(tmp_path / "src.npz", name)
    return stem, logits, labels, names


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose mapping holds the tensor's first byte, per /proc/self/maps (None: anonymous)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if start <= address < end:
            return fields[5].strip() if len(fields) == 6 else None
    return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stored_table_round_trips_exactly_as_a_map_of_the_file(tmp_path):
    stem, logits, labels, names = _import(tmp_path)
    npz = models._with(stem, ".npz")
    table = importers.load_logits_table("tab")
    assert table.logits.dtype == torch.float32 and table.labels.dtype == torch.int64
    np.testing.assert_array_equal(table.logits.numpy(), logits)
    np.testing.assert_array_equal(table.labels.numpy(), labels)
    assert table.class_names == tuple(names) and table.source == "tab"
    # the tensor IS the file's pages: its address lies in a mapping of NAME.npz
    assert _mapped_file(table.logits) == str(npz.resolve())
    assert isinstance(logit_tables.map_stored_logits(npz), np.memmap)
    # copy-on-write: a caller writing into the tensor changes neither the file nor a new open
    before = _sha(npz)
    table.logits[0, 0] += 100.0
    assert _sha(npz) == before
    assert importers.load_logits_table("tab").logits[0, 0].item() == logits[0, 0]


def test_open_reads_no_logits_value(tmp_path, monkeypatch):
    """Only the labels (N,) go through numpy's array reader; the (N, C) logits never do."""
    _import(tmp_path)
    shapes = []
    real = np.lib.format.read_array

    def spy(*args, **kwargs):
        array = real(*args, **kwargs)
        shapes.append(array.shape)
        return array

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    table = importers.load_logits_table("tab")
    assert shapes == [(len(table),)]
    # the oracle path (a whole read) does go through it, so the spy would have seen the logits
    logit_tables.read_logits_file(models._with(models.resolve_checkpoint("tab"), ".npz"))
    assert tuple(table.logits.shape) in shapes


def test_unmappable_files_are_still_read_or_refused_in_one_sentence(tmp_path):
    stem, logits, labels, _ = _import(tmp_path)
    npz = models._with(stem, ".npz")
    # a compressed member cannot be mapped: the table is read whole, with the same values
    np.savez_compressed(npz, logits=logits, labels=labels)
    assert logit_tables.map_stored_logits(npz) is None
    table = importers.load_logits_table("tab")
    np.testing.assert_array_equal(table.logits.numpy(), logits)
    np.testing.assert_array_equal(table.labels.numpy(), labels)
    # float64 logits (written by hand) are not mapped either, and come back as float32
    np.savez(npz, logits=logits.astype(np.float64), labels=labels)
    assert logit_tables.map_stored_logits(npz) is None
    assert importers.load_logits_table("tab").logits.dtype == torch.float32
    # a truncated file is one sentence, not a BadZipFile or a map past the end of the file
    np.savez(npz, logits=logits, labels=labels)
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(KdvizError) as err:
        importers.load_logits_table("tab")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".") and "tab.npz" in msg


def test_header_promising_more_bytes_than_the_member_holds_is_not_mapped(tmp_path):
    stem, logits, _, _ = _import(tmp_path)
    npz = models._with(stem, ".npz")
    fewer = logits[:-10]
    with zipfile.ZipFile(npz, "w") as archive, archive.open("logits.npy", "w") as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": logits.shape}
        )
        member.write(fewer.tobytes())  # 10 rows short of what the header says
    assert logit_tables.map_stored_logits(npz) is None
