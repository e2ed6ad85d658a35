"""ONNX export and int8 quantization of checkpoints, and what compression buys: file size, CPU
latency, accuracy (with its Wilson interval) and agreement with the teacher.

onnx and onnxruntime are imported inside the functions that need them, so importing this module
(the CLI's parser does) stays cheap.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from kdviz import __version__, paths
from kdviz.data import Dataset, load_dataset, normalize
from kdviz.errors import KdvizError
from kdviz.models import card_fingerprint, load_card, load_checkpoint, resolve_checkpoint
from kdviz.stats import wilson_interval

METADATA_KEY = "kdviz_card"  # the ONNX metadata_props key `kdviz import` reads (contract.md)
OPSET = 17  # onnxruntime 1.32 runs opsets up to 23; 17 is what most deployment runtimes accept
INPUT, OUTPUT = "input", "logits"
PRECISIONS = ("fp32", "int8")
CALIBRATION_IMAGES = 256  # static int8: images from the checkpoint's own training data
CALIBRATION_SEED = 0
LATENCY_BATCHES = (1, 256)
LATENCY_THREADS = 1  # one intra-op thread: like a small device, and steadier on a shared machine
_CONV_OPS = {"Conv", "ConvTranspose"}
_MAX_ONNX_BYTES = 2 * 1024**3  # protobuf's limit; larger models use external data, not supported


@dataclass(frozen=True)
class ExportResult:
    """One exported file and the kdviz_card metadata it carries."""

    path: Path
    card: dict[str, Any]  # the kdviz_card JSON in the file's metadata
    size_bytes: int

    @property
    def precision(self) -> str:
        return str(self.card.get("precision", "fp32"))


def exports_dir() -> Path:
    """KDVIZ_HOME/exports: where `kdviz export` and the Compress page write by default."""
    folder = paths.kdviz_home() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_name(ref: str | Path) -> str:
    """The file name (without suffix) an export of ``ref`` gets: the checkpoint's stem name, with
    its run id in front for a checkpoint inside a run folder (two runs' "student" stay apart)."""
    stem = resolve_checkpoint(ref)
    name = stem.name
    if stem.parent.parent.resolve() == paths.runs_dir().resolve():
        name = f"{stem.parent.name}--{name}"
    return paths.check_name(name, "export name")


def default_export_path(ref: str | Path, precision: str = "fp32") -> Path:
    """KDVIZ_HOME/exports/NAME.onnx, or NAME.int8.onnx for int8."""
    _check_precision(precision)
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    return exports_dir() / f"{export_name(ref)}{suffix}"


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise KdvizError(
            f"Precision {precision!r} is not offered; use one of {', '.join(PRECISIONS)}."
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers such as BatchNorm statistics excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- export


def export_onnx(
    ref: str | Path,
    out: str | Path | None = None,
    *,
    precision: str = "fp32",
    calibration: str | None = None,
    opset: int = OPSET,
) -> ExportResult:
    """Export a checkpoint (a model or an ensemble, as one graph) to ONNX, optionally as int8.

    The graph takes normalised float32 input (N, C, H, W) with a dynamic batch axis and returns
    logits (N, K). int8 uses onnxruntime.quantization: dynamic (weights int8, activations
    quantized on the fly) when the graph has no convolution, as for MLPs; static with
    ``CALIBRATION_IMAGES`` seeded images of the checkpoint's training data (``card.dataset``,
    or ``calibration``) otherwise. The card travels in the metadata under "kdviz_card".
    """
    _check_precision(precision)
    stem = resolve_checkpoint(ref)
    card = load_card(stem)
    if card.kind not in ("model", "ensemble", "onnx"):
        raise KdvizError(
            f"The checkpoint {card.name!r} is a table of logits, not a model; there is nothing "
            "to export or to time (pick a model checkpoint)."
        )
    target = Path(out).expanduser() if out else default_export_path(stem, precision)
    if target.suffix.lower() != ".onnx":
        raise KdvizError(f"The output {target} does not end in .onnx; name the file NAME.onnx.")
    if not target.parent.is_dir():
        raise KdvizError(f"The folder {target.parent} does not exist; create it or pick another.")
    meta = {
        "name": card.name,
        "num_classes": card.num_classes,
        "class_names": list(card.class_names),
        "in_shape": list(card.in_shape),
        "mean": list(card.mean),
        "std": list(card.std),
        "arch": card.arch,
        "arch_kwargs": dict(card.arch_kwargs),
        "source_kind": card.kind,
        "dataset": card.dataset,
        "precision": precision,
        "quantization": "",
        "opset": opset,
        "kdviz_version": __version__,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".kdviz-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        meta.update(_fp32_graph(stem, card, fp32, opset))
        final = fp32
        if precision == "int8":
            final = Path(tmp) / "int8.onnx"
            meta.update(_quantize_int8(fp32, final, card, calibration, Path(tmp)))
        _write_metadata(final, meta)
        os.replace(final, target)
    return ExportResult(target, meta, target.stat().st_size)


def _fp32_graph(stem: Path, card: Any, fp32: Path, opset: int) -> dict[str, Any]:
    """Write the fp32 graph of a checkpoint to ``fp32``: torch.onnx.export of a kdviz or
    PyTorch model, or a copy of an imported ONNX file. Returns its source hash and size."""
    if card.kind == "onnx":  # already a graph: copy it (int8 and the metadata still apply)
        import onnx

        source = stem.with_name(stem.name + ".onnx")
        read_onnx_card(source)  # refuses a file damaged since it was imported
        shutil.copyfile(source, fp32)
        weights = onnx.load(str(fp32)).graph.initializer
        parameters = sum(math.prod(t.dims) for t in weights)
        return {"source_weights_sha256": card_fingerprint(stem), "parameters": int(parameters)}
    from kdviz.models import weights_hash

    model, card = load_checkpoint(stem)
    _torch_export(model, tuple(card.in_shape), fp32, opset, card.arch)
    return {
        "source_weights_sha256": card_fingerprint(stem) or weights_hash(model),
        "parameters": count_parameters(model),
    }


def _torch_export(
    model: nn.Module, in_shape: tuple[int, int, int], path: Path, opset: int, arch: str = "model"
) -> None:
    example = torch.zeros(2, *in_shape)  # (2, C, H, W): a batch of 2 so no size-1 axis is baked in
    with warnings.catch_warnings():  # dynamo=False (the TorchScript exporter) warns it is legacy
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.cpu().eval(),
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
        except Exception as err:  # the exporter raises many types for unsupported operators
            why = str(err).splitlines()[0].split(". Please")[0].removeprefix("Unsupported: ")
            raise KdvizError(
                f"PyTorch cannot export {arch!r} to ONNX opset {opset} ({why[:160]}); export a "
                "checkpoint of another architecture."
            ) from err


def _input_name(path: Path) -> str:
    """The graph's image input (an imported graph may call it anything; initialisers that some
    exporters also list as inputs are skipped)."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in weights)


def _has_convolution(path: Path) -> bool:
    import onnx

    return any(node.op_type in _CONV_OPS for node in onnx.load(str(path)).graph.node)


def _quantize_int8(
    fp32: Path, out: Path, card: Any, calibration: str | None, tmp: Path
) -> dict[str, Any]:
    """Quantize fp32 -> out; returns the metadata fields that say how."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    try:
        quant_pre_process(str(fp32), str(prepared))  # shape inference + Conv+BN fusion, as ORT asks
        if not _has_convolution(prepared):
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
            return {"quantization": "dynamic (int8 weights, activations quantized at run time)"}
        spec = calibration or card.dataset
        images = calibration_images(card, spec)
        quantize_static(
            str(prepared),
            str(out),
            _CalibrationReader(images, _input_name(prepared)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
    except KdvizError:
        raise
    except (
        Exception
    ) as err:  # onnxruntime.quantization raises plain errors for graphs it cannot handle
        raise KdvizError(
            f"onnxruntime could not quantize {card.name!r} to int8 "
            f"({str(err).splitlines()[0][:160] if str(err) else type(err).__name__}); "
            "export it in fp32 instead."
        ) from err
    return {
        "quantization": "static (int8 weights per channel, uint8 activations, QDQ)",
        "calibration": {"dataset": spec, "split": "train", "images": int(images.shape[0]),
                        "seed": CALIBRATION_SEED},
    }  # fmt: skip


def calibration_images(card: Any, spec: str, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """``n`` normalised training images (n, C, H, W) float32 of ``spec``, drawn with a fixed seed."""
    if not spec:
        raise KdvizError(
            f"The checkpoint {card.name!r} names no training dataset, which static int8 "
            "calibration draws from; pass --calibration SPEC (kdviz list datasets)."
        )
    train = load_dataset(spec, "train", download=False)
    if tuple(train.in_shape) != tuple(card.in_shape):
        raise KdvizError(
            f"The calibration data {spec!r} has images of shape {train.in_shape}, but the model "
            f"takes {tuple(card.in_shape)}; pass --calibration with the model's training data."
        )
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    index = torch.randperm(len(train), generator=generator)[:n]
    return normalize(train.images[index], card.mean, card.std).numpy()


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol: get_next() -> {input: batch} or None."""

    def __init__(self, images: np.ndarray, name: str = INPUT, batch: int = 32) -> None:
        self._batches = iter([{name: images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # not needed by MinMax calibration; part of the protocol
        pass


def _write_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    model.producer_name = "kdviz"
    model.producer_version = __version__
    onnx.save(model, str(path))


# --------------------------------------------------------------------------- reading


def _refuse(path: Path, why: str) -> KdvizError:
    return KdvizError(
        f"The file {path} is not a usable ONNX model ({why}); export it again or pick a .onnx file."
    )


def read_onnx_card(path: str | Path) -> dict[str, Any]:
    """The kdviz_card metadata of an ONNX file ({} when it has none); a corrupt or non-ONNX
    file raises KdvizError. Nothing in the file is executed."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path).expanduser()
    if not path.is_file():
        raise KdvizError(f"There is no file {path}; give the path of a .onnx file.")
    if path.stat().st_size > _MAX_ONNX_BYTES:
        raise _refuse(path, "over 2 GB, which needs external data files")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as err:
        raise _refuse(path, f"it does not parse: {type(err).__name__}") from err
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise _refuse(path, "it has no graph")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise _refuse(path, f"it fails ONNX's checker: {str(err).splitlines()[0][:120]}") from err
    value = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if value is None:
        return {}
    try:
        meta = json.loads(value)
    except ValueError as err:
        raise _refuse(path, f"its {METADATA_KEY} metadata is not JSON") from err
    if not isinstance(meta, dict):
        raise _refuse(path, f"its {METADATA_KEY} metadata is not a JSON object")
    return meta


@functools.lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int, size: int, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings on the console of the app
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        why = f"onnxruntime cannot load it: {str(err).splitlines()[0][:120]}"
        raise _refuse(Path(path), why) from err


def onnx_session(path: str | Path, threads: int = LATENCY_THREADS):
    """A CPU onnxruntime InferenceSession for ``path`` (kept while the file is unchanged)."""
    path = Path(path).expanduser()
    read_onnx_card(path)  # refuses a corrupt or non-ONNX file with one sentence first
    stat = path.stat()
    return _session(str(path.resolve()), stat.st_mtime_ns, stat.st_size, threads)


def onnx_logits(path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) float32 of an ONNX file on normalised float32 ``images`` (N, C, H, W), run
    by the same OnnxModule that serves imported ONNX checkpoints."""
    from kdviz.importers import OnnxModule

    read_onnx_card(path)  # a corrupt or non-ONNX file is refused in one sentence first
    try:
        with torch.inference_mode():
            return OnnxModule(Path(path).expanduser())(images)
    except Exception as err:  # onnxruntime's InvalidArgument / Fail for a graph that will not run
        why = f"onnxruntime cannot run it: {str(err).splitlines()[0][:120]}"
        raise _refuse(Path(path), why) from err


def onnx_dataset_logits(path: str | Path, dataset: Dataset) -> torch.Tensor:
    """Logits (N, K) of an exported file on a dataset split, normalised with the file's card."""
    meta = read_onnx_card(path)
    if not meta:
        raise KdvizError(
            f"The file {path} has no {METADATA_KEY} metadata (input shape, normalisation); "
            "import it with `kdviz import FILE --name N` and its flags instead."
        )
    if list(meta.get("in_shape", [])) != list(dataset.in_shape):
        raise KdvizError(
            f"The file {path} takes inputs of shape {meta.get('in_shape')} but {dataset.spec!r} has "
            f"{list(dataset.in_shape)}; pick a model trained on this dataset."
        )
    return onnx_logits(path, normalize(dataset.images, meta["mean"], meta["std"]))


# --------------------------------------------------------------------------- latency


def median_latency(
    run: Callable[[], object],
    *,
    min_runs: int = 5,
    max_runs: int = 50,
    budget_s: float = 1.0,
    warmup: int = 2,
) -> float:
    """Median wall time of ``run()`` in seconds: ``warmup`` untimed calls, then at least
    ``min_runs`` and at most ``max_runs`` timed ones, stopping once ``budget_s`` is spent."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter() - start < budget_s
    ):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def onnx_latency(
    path: str | Path, batch: int, *, threads: int = LATENCY_THREADS, budget_s: float = 1.0,
    min_runs: int = 5,
) -> float:  # fmt: skip
    """Median CPU seconds of one forward pass of an ONNX file at ``batch`` random images."""
    session = onnx_session(path, threads)
    info = session.get_inputs()[0]
    warmup = 1 if batch > 16 else 2  # the first run allocates; one is enough for large batches
    shape = read_onnx_card(path).get("in_shape") or [int(d) for d in info.shape[1:]]
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    return median_latency(
        lambda: session.run(None, {info.name: x}),
        budget_s=budget_s,
        min_runs=min_runs,
        warmup=warmup,
    )


def _fixed_batch(path: str | Path) -> int | None:
    """The batch size a graph is fixed to, or None when its batch axis is dynamic."""
    dim = onnx_session(path).get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def machine_description() -> str:
    """The CPU latencies were measured on, in words, e.g. "x86_64, AMD EPYC 7B13, 2 cores"."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    model = model or platform.processor()
    parts = [platform.machine() or "?", model, f"{os.cpu_count() or 1} cores"]
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------- the table


def measure_export(
    result: ExportResult,
    dataset: Dataset,
    *,
    batches: Sequence[int] = LATENCY_BATCHES,
    budget_s: float = 1.0,
) -> dict[str, Any]:
    """One row of the compression table for an exported file: parameters, size, the median
    latency at each batch size (ms, empty ``batches`` skips it) and its predictions (N,)."""
    predictions = onnx_dataset_logits(result.path, dataset).argmax(dim=1).numpy()
    row: dict[str, Any] = {
        "model": result.card.get("name", result.path.stem),
        "precision": result.precision,
        "parameters": int(result.card.get("parameters", 0)),
        "size_bytes": int(result.size_bytes),
        "predictions": predictions,
    }
    fixed = _fixed_batch(result.path)  # an imported graph may take one batch size only
    for batch in LATENCY_BATCHES:
        row[f"latency_b{batch}_ms"] = (
            # large batches take long: 3 runs give a median; small ones get at least 5
            1000.0
            * onnx_latency(result.path, batch, budget_s=budget_s, min_runs=5 if batch <= 16 else 3)
            if batch in batches and fixed in (None, batch)
            else math.nan
        )
    return row


def compress_frame(
    rows: Sequence[dict[str, Any]], labels: torch.Tensor, reference: np.ndarray | None = None
) -> pd.DataFrame:
    """The table: one row per file with accuracy, its 95% Wilson interval and top-1 agreement
    with ``reference`` predictions (N,) (the teacher's), from the rows of measure_export."""
    truth = labels.numpy()
    out = []
    for row in rows:
        pred = row["predictions"]
        correct = int((pred == truth).sum())
        low, high = wilson_interval(correct, len(truth))
        record = {k: v for k, v in row.items() if k != "predictions"}
        record.update(
            size_mb=row["size_bytes"] / 1e6,
            n=len(truth),
            accuracy=correct / max(len(truth), 1),
            accuracy_low=low,
            accuracy_high=high,
            agreement=float((pred == reference).mean()) if reference is not None else math.nan,
        )
        out.append(record)
    return pd.DataFrame(out)


def pareto_mask(cost: Sequence[float], accuracy: Sequence[float]) -> list[bool]:
    """True for the points no other point beats: none is at least as cheap and at least as
    accurate while strictly better in one. A NaN cost or accuracy is never on the front."""
    points = list(zip(cost, accuracy, strict=True))
    ok = [not (math.isnan(c) or math.isnan(a)) for c, a in points]
    mask = []
    for i, (c, a) in enumerate(points):
        dominated = any(
            ok[j] and c2 <= c and a2 >= a and (c2 < c or a2 > a)
            for j, (c2, a2) in enumerate(points)
            if j != i
        )
        mask.append(ok[i] and not dominated)
    return mask


def _ratio(value: float) -> str:
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def _more_or_less(ratio: float, more: str, less: str) -> str:
    """ "2.5x smaller" for ratio 2.5, "1.6x larger" for ratio 1/1.6."""
    if not math.isfinite(ratio) or ratio <= 0:
        return ""
    if abs(ratio - 1) < 0.05:
        return f"about as {more.removesuffix('er')}"
    return f"{_ratio(ratio)} {more}" if ratio > 1 else f"{_ratio(1 / ratio)} {less}"


def summary_sentence(teacher: dict[str, Any], student: dict[str, Any], who: str = "student") -> str:
    """ "The student (NAME) is Nx smaller and Mx faster than the teacher (NAME), at X points less
    accuracy" from two rows of compress_frame (latency at batch 1)."""
    size = _more_or_less(teacher["size_bytes"] / student["size_bytes"], "smaller", "larger")
    speed = _more_or_less(teacher["latency_b1_ms"] / student["latency_b1_ms"], "faster", "slower")
    points = 100 * (student["accuracy"] - teacher["accuracy"])
    if abs(points) < 0.05:
        cost = "at the same accuracy"
    else:
        cost = f"at {abs(points):.1f} points {'less' if points < 0 else 'more'} accuracy"
    what = " and ".join(p for p in (size, f"{speed} at batch 1" if speed else "") if p)
    return (
        f"The {who} ({student['model']}, {student['precision']}) is {what} than the teacher "
        f"({teacher['model']}, {teacher['precision']}), {cost} "
        f"({100 * student['accuracy']:.1f}% vs {100 * teacher['accuracy']:.1f}%)."
    )


# --------------------------------------------------------------------------- command line


def add_export_parser(sub: Any) -> None:
    """The `kdviz export` sub-command."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, optionally quantized to int8",
        description="Export a checkpoint (or an ensemble, as one graph) to ONNX with its card in "
        "the file's metadata, so `kdviz import FILE.onnx --name N` needs no flags.",
    )
    p.add_argument("checkpoint", help="checkpoint: NAME, STEM, STEM.json or STEM.safetensors")
    p.add_argument(
        "--format",
        choices=["onnx"],
        default="onnx",
        help="onnx (the only format: TorchScript is not offered because loading a TorchScript "
        "file back runs the code it carries, and PyTorch has deprecated it)",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="int8 via onnxruntime: dynamic for MLPs, static (calibrated on 256 training "
        "images) for convolutional models",
    )
    p.add_argument("--out", default="", help="output FILE.onnx (default KDVIZ_HOME/exports/)")
    p.add_argument(
        "--calibration",
        default=None,
        help="dataset spec for int8 calibration (default: the card's)",
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run_export_cli(args: argparse.Namespace) -> int:
    result = export_onnx(
        args.checkpoint,
        args.out or None,
        precision=args.quantize or "fp32",
        calibration=args.calibration,
        opset=args.opset,
    )
    if args.json:
        print(json.dumps({"path": str(result.path), "size_bytes": result.size_bytes,
                          "card": result.card}))  # fmt: skip
        return 0
    how = f", {result.card['quantization']}" if result.card.get("quantization") else ""
    print(f"{result.path}  ({result.size_bytes / 1e6:.2f} MB, {result.precision}{how})")
    return 0


def cached_export(ref: str | Path, precision: str = "fp32") -> ExportResult:
    """The export of ``ref`` at its default path, made only when missing or stale (the file's
    source_weights_sha256, precision or kdviz version differ from the checkpoint's)."""
    target = default_export_path(ref, precision)
    fingerprint = card_fingerprint(ref)
    if fingerprint and target.is_file():
        try:
            meta = read_onnx_card(target)
        except KdvizError:  # a torn or foreign file is replaced
            meta = {}
        if (
            meta.get("source_weights_sha256") == fingerprint
            and meta.get("precision") == precision
            and meta.get("kdviz_version") == __version__
        ):
            return ExportResult(target, meta, target.stat().st_size)
    return export_onnx(ref, target, precision=precision)
