"""Bring your own: foreign state dicts, ONNX models and logits tables become kdviz checkpoints.

Everything lands under checkpoints_dir() as NAME.<file> + NAME.json (the card). Nothing is
unpickled: state dicts load once with torch.load(weights_only=True) or safetensors and are
re-saved as safetensors, ONNX graphs run in onnxruntime, logits tables are plain arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdviz import models, paths
from kdviz.architectures import WeightsOnMeta
from kdviz.errors import KdvizError
from kdviz.logit_tables import (
    LOGITS_SUFFIXES,
    LogitsTable,
    load_tensors_only,
    make_logits_table,
    open_stored_table,
    read_logits_file,
)

__all__ = [
    "LOGITS_SUFFIXES",
    "LogitsTable",
    "OnnxModule",
    "evaluate_logits",
    "import_source",
    "is_logits_file",
    "is_logits_source",
    "load_logits_table",
    "make_logits_table",
    "parse_classes",
    "parse_input_shape",
    "read_logits_file",
    "source_logits",
]

STATE_SUFFIXES = (".pt", ".pth", ".safetensors")
ONNX_METADATA_KEY = "kdviz_card"  # written by `kdviz export`
_DEFAULT_FOREIGN_SIZE = 224  # torchvision / timm input size when nothing else says


# ---------------------------------------------------------------------------- flags


def parse_input_shape(value: Any) -> tuple[int, int, int] | None:
    """``"1x28x28"``, ``"1,28,28"`` or a sequence of three ints -> (C, H, W); None stays None."""
    if value is None or value == "" or value == []:
        return None
    parts = value.replace(",", "x").lower().split("x") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise KdvizError(
            f"The input shape {value!r} is not valid; write channels x height x width, e.g. 1x28x28."
        )
    return shape  # type: ignore[return-value]


def parse_classes(value: Any) -> list[str] | None:
    """Class names from a list, a file of one name per line, or ``"a,b,c"``; None stays None."""
    if value is None or value == "" or value == []:
        return None
    if not isinstance(value, str):
        return [str(v) for v in value]
    file = Path(value).expanduser()
    if "," not in value and file.is_file():
        if file.stat().st_size > 16 << 20:
            raise KdvizError(
                f"The classes file {file} is larger than 16 MB; give one name per line."
            )
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
    else:
        names = [n.strip() for n in value.split(",")]
    if not names or not all(names):
        raise KdvizError(
            f"The classes {value!r} are not valid; give a file with one name per line or a,b,c."
        )
    return names


def _per_channel(values: Any, channels: int, what: str, default: float) -> list[float]:
    if values is None or len(values) == 0:
        return [default] * channels
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if len(out) == 1:
        out *= channels
    if len(out) != channels or not all(math.isfinite(v) for v in out):
        raise KdvizError(
            f"The {what} {values!r} does not fit {channels} channel(s); give one number or one per channel."
        )
    if what == "std" and min(out) <= 0:
        raise KdvizError(f"The std {values!r} must be positive; give one number per channel.")
    if what == "mean" and not all(-1.0 <= v <= 1.0 for v in out):
        raise KdvizError(
            f"The mean {values!r} is not on the [0, 1] scale; divide it by 255 (e.g. 0.485, not 123.7)."
        )
    return out


@dataclass(frozen=True)
class _Flags:
    arch: str | None
    in_shape: tuple[int, int, int] | None
    mean: list[float] | None
    std: list[float] | None
    classes: list[str] | None
    dataset: str | None


def _dataset_info(spec: str | None) -> Any:
    """The dataset's test split (shape, classes, normalisation), or None without a spec."""
    if not spec:
        return None
    from kdviz.data import load_dataset

    return load_dataset(spec, "test")


def _resolve_classes(
    k: int, flags: _Flags, ds: Any, found: tuple[str, ...] | list[str] | None, what: str
) -> list[str]:
    """Class names for a source with ``k`` outputs; a differing count is one sentence."""
    if ds is not None and ds.num_classes != k:
        raise KdvizError(
            f"{what} has {k} classes but dataset {ds.spec!r} has {ds.num_classes}; "
            "pick the dataset it was trained on."
        )
    if flags.classes is not None:
        if len(flags.classes) != k:
            raise KdvizError(
                f"{what} has {k} classes but --classes names {len(flags.classes)}; give one name per class."
            )
        return list(flags.classes)
    if found and len(found) == k and list(found) != [str(i) for i in range(k)]:
        return list(found)
    return list(ds.class_names) if ds is not None else [str(i) for i in range(k)]


# ---------------------------------------------------------------------------- import


def import_source(
    path: str | Path,
    name: str,
    *,
    arch: str | None = None,
    in_shape: Any = None,
    mean: Any = None,
    std: Any = None,
    classes: Any = None,
    dataset: str | None = None,
    replace: bool = False,
) -> Path:
    """Register a file under checkpoints_dir() as NAME (card + weights / .onnx / .npz); returns the stem.

    An existing checkpoint NAME in checkpoints_dir() is replaced only with ``replace=True``
    (nothing a user imported is lost by a typo in a name).

    .pt / .pth / .safetensors with ``arch`` are state dicts; .onnx is an ONNX model; .npz /
    .npy / .csv / .parquet (and a .pt holding logits) are logits tables. Bad input raises
    KdvizError with one sentence; nothing is registered then.
    """
    name = paths.check_name(name, "checkpoint name")
    source = Path(path).expanduser()
    if not source.is_file():
        raise KdvizError(f"No file {source} was found; give the path of the file to import.")
    if models._stem_exists(Path(paths.PRETRAINED_DIR) / name):
        raise KdvizError(
            f"The name {name!r} is taken by a shipped checkpoint; choose another name."
        )
    if not replace and models._with(paths.checkpoints_dir() / name, ".json").is_file():
        raise KdvizError(
            f"A checkpoint named {name!r} exists already in {paths.checkpoints_dir()}; choose "
            "another name, or pass --replace to overwrite it."
        )
    flags = _Flags(
        arch=arch.strip().lower() if arch else None,
        in_shape=parse_input_shape(in_shape),
        mean=None if mean is None else list(mean),
        std=None if std is None else list(std),
        classes=parse_classes(classes),
        dataset=dataset or None,
    )
    stem = paths.checkpoints_dir() / name
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        return _import_onnx(source, stem, flags)
    if suffix in STATE_SUFFIXES and (flags.arch or suffix == ".safetensors"):
        if not flags.arch:
            raise KdvizError(
                f"{source.name} holds weights; say which architecture they belong to with --arch "
                "(e.g. torchvision:resnet18, timm:NAME or a kdviz model)."
            )
        return _import_state_dict(source, stem, flags)
    if suffix in LOGITS_SUFFIXES:
        return _import_logits(source, stem, flags)
    raise KdvizError(
        f"{source.name} is not a file kdviz imports; use a state dict (.pt, .pth, .safetensors "
        f"with --arch), an .onnx model or a logits table ({', '.join(LOGITS_SUFFIXES)})."
    )


def _drop_other_kinds(stem: Path, keep: str) -> None:
    """A re-import under the same name replaces a previous source of another kind."""
    for suffix in (".safetensors", ".pt", ".onnx", ".npz"):
        if suffix != keep:
            models._with(stem, suffix).unlink(missing_ok=True)


def _check_state_size(count: int, path: Path) -> None:
    """A state dict holding more values than kdviz's parameter limit is refused unread."""
    limit = models.max_params()
    if count > limit:
        raise KdvizError(
            f"{path.name} holds {count:,} values, over kdviz's limit of {limit:,} parameters; "
            "import a smaller model (or raise KDVIZ_MAX_PARAMS)."
        )


def _safetensors_size(path: Path) -> int:
    """The values in a .safetensors file, summed from its header's shapes (no tensor read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        keys = handle.keys()  # a safe_open handle is not iterable itself
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in keys)


def _read_foreign_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``; its size is checked against the limit before any tensor is
    read (safetensors: from the header; .pt: mapped, so only the pickled index is read)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            count = _safetensors_size(path)
        except Exception as err:  # safetensors raises its own types for corrupt files
            raise KdvizError(
                f"{path.name} is truncated or not a safetensors file; save it again."
            ) from err
        _check_state_size(count, path)
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as err:
            raise KdvizError(
                f"{path.name} is truncated or not a safetensors file; save it again."
            ) from err
        return models._unwrap_state_dict(obj, path)
    state = models._unwrap_state_dict(load_tensors_only(path, mmap=True), path)
    _check_state_size(sum(t.numel() for t in state.values()), path)
    return state


def _first_conv_and_head(model: nn.Module) -> tuple[str | None, str | None]:
    """(first convolution's weight key, classifier's weight key), in the model's own key order."""
    state = model.state_dict()
    convs = [key for key, t in state.items() if key.endswith("weight") and t.dim() == 4]
    heads = [key for key, t in state.items() if key.endswith("weight") and t.dim() >= 2]
    return (convs[0] if convs else None), (heads[-1] if heads else None)


def _import_state_dict(source: Path, stem: Path, flags: _Flags) -> Path:
    """Classes and input channels come from the state dict (classifier rows, first conv's
    input channels); the weights are re-saved as safetensors through save_checkpoint."""
    arch = flags.arch or ""
    foreign = arch.startswith(("torchvision:", "timm:"))
    state = _read_foreign_state(source)
    ds = _dataset_info(flags.dataset)
    shape = flags.in_shape or (tuple(ds.in_shape) if ds is not None else None)
    if shape is None and not foreign:
        raise KdvizError(
            f"kdviz cannot tell the input shape of {source.name}; give --input-shape CxHxW or --dataset."
        )
    guess_k = ds.num_classes if ds else len(flags.classes) if flags.classes else 2
    guess_shape = shape or (3, _DEFAULT_FOREIGN_SIZE, _DEFAULT_FOREIGN_SIZE)
    # The guess only names the first conv and the head: its weights stay on the meta device
    # (no memory), and 2 classes keep it under the parameter limit whenever the real one is.
    with torch.random.fork_rng(devices=[]), WeightsOnMeta():
        conv_key, head_key = _first_conv_and_head(models.create_model(arch, guess_k, guess_shape))
    if head_key not in state:
        raise KdvizError(
            f"{source.name} has no {head_key!r} weights, so it is not a state dict of {arch!r}; "
            "check --arch."
        )
    k = int(state[head_key].shape[0])
    class_names = _resolve_classes(k, flags, ds, None, source.name)
    channels = int(state[conv_key].shape[1]) if conv_key in state else guess_shape[0]
    if conv_key in state and shape is not None and shape[0] != channels:
        raise KdvizError(
            f"The first convolution in {source.name} takes {channels} channel(s) but the input "
            f"shape is {tuple(shape)}; give --input-shape with {channels} channel(s)."
        )
    shape = shape or (channels, _DEFAULT_FOREIGN_SIZE, _DEFAULT_FOREIGN_SIZE)
    card = models.ModelCard(
        name=stem.name,
        arch=arch,
        arch_kwargs={"in_channels": channels} if foreign and channels != 3 else {},
        num_classes=k,
        class_names=class_names,
        in_shape=list(shape),
        mean=_per_channel(flags.mean or (ds.mean if ds else None), shape[0], "mean", 0.0),
        std=_per_channel(flags.std or (ds.std if ds else None), shape[0], "std", 1.0),
        dataset=flags.dataset or "",
        extra={"imported_from": source.name},
    )
    card.validate()
    with torch.random.fork_rng(devices=[]):
        model = models.create_model(arch, k, tuple(shape), **card.arch_kwargs)
    models._check_state(state, model, card, source)
    model.load_state_dict(state, strict=True)
    models.check_forward(
        model.eval(), card, f"The model in {source.name}",
        fix_shape="give the --input-shape it was trained on", fix_classes="check --arch",
    )  # fmt: skip
    models.save_checkpoint(model, card, stem)
    _drop_other_kinds(stem, ".safetensors")
    return stem


def _smoke_test(stem: Path) -> None:
    """load_checkpoint runs one zero image through the model; a failure unregisters it."""
    try:
        models.load_checkpoint(stem)
    except KdvizError:
        _remove(stem)
        raise


def _remove(stem: Path) -> None:
    for suffix in (".json", ".safetensors", ".onnx", ".npz"):
        models._with(stem, suffix).unlink(missing_ok=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- logits import


def _import_logits(source: Path, stem: Path, flags: _Flags) -> Path:
    table = read_logits_file(source)
    ds = _dataset_info(flags.dataset)
    names = _resolve_classes(table.num_classes, flags, ds, table.class_names, source.name)
    arrays: dict[str, np.ndarray] = {
        "logits": table.logits.numpy(),
        "class_names": np.asarray(names, dtype=str),
    }
    if table.labels is not None:
        arrays["labels"] = table.labels.numpy()
    npz = models._with(stem, ".npz")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)  # uncompressed, so load_logits_table can map the logits

    models._atomic_write(npz, write)
    card = models.ModelCard(
        name=stem.name,
        arch="logits",
        kind="logits",
        num_classes=table.num_classes,
        class_names=names,
        dataset=flags.dataset or "",
        weights_sha256=_file_sha256(npz),
        extra={
            "imported_from": source.name,
            "rows": len(table),
            "has_labels": table.labels is not None,
        },
    )
    card.validate()
    models._write_card(card, stem)
    _drop_other_kinds(stem, ".npz")
    return stem


def load_logits_table(ref: str | Path) -> LogitsTable:
    """The table of a checkpoint card of kind "logits" (NAME.npz); class names from the card.

    The logits tensor is a copy-on-write map of the file (see logit_tables.map_stored_logits).
    """
    stem = models.resolve_checkpoint(ref)
    card = models.load_card(stem)
    if card.kind != "logits":
        raise KdvizError(f"{card.name!r} is a {card.kind}, not a logits table; give a logits card.")
    npz = models._with(stem, ".npz")
    if not npz.is_file():
        raise KdvizError(f"The logits card {stem} has no {npz.name}; import the logits file again.")
    return open_stored_table(npz, card.class_names, card.name)  # logits mapped, not read


def is_logits_file(ref: str | Path) -> bool:
    """True for a logits file (.npz, .csv, ...) that has no card beside it."""
    given = Path(str(ref)).expanduser()
    card = models._with(models._strip_suffix(given), ".json")
    return given.is_file() and given.suffix.lower() in LOGITS_SUFFIXES and not card.is_file()


def is_logits_source(ref: str | Path) -> bool:
    """True for a logits card, or a logits file that has no card beside it."""
    if is_logits_file(ref):
        return True
    try:
        return models.load_card(ref).kind == "logits"
    except KdvizError:
        return False


def _table_of(ref: str | Path) -> LogitsTable:
    return read_logits_file(ref) if is_logits_file(ref) else load_logits_table(ref)


def _rows_for_split(table: LogitsTable, dataset: Any) -> torch.Tensor:
    """The table's logits when its rows are the split's rows (count, classes and labels agree)."""
    where = f"{dataset.spec!r} [{dataset.split}]"
    if table.num_classes != dataset.num_classes:
        raise KdvizError(
            f"The logits {table.source!r} have {table.num_classes} classes but {where} has "
            f"{dataset.num_classes}; use logits computed on this dataset."
        )
    if len(table) != len(dataset):
        raise KdvizError(
            f"The logits {table.source!r} have {len(table):,} rows but {where} has "
            f"{len(dataset):,}; the rows must be that split's examples, in its order."
        )
    if table.labels is not None:
        differ = int((table.labels != dataset.labels).sum())
        if differ:
            raise KdvizError(
                f"The labels of {table.source!r} differ from {where}'s in {differ:,} rows; the rows "
                "must be that split's examples, in its order."
            )
    return table.logits


def source_logits(ref: str | Path, dataset_spec: str, split: str = "test") -> torch.Tensor:
    """Logits (N, K) of any checkpoint kind on a dataset split (cached by card_fingerprint); a
    logits card gives its table when its rows are that split's rows, else KdvizError."""
    if is_logits_source(ref):
        from kdviz.data import load_dataset

        return _rows_for_split(_table_of(ref), load_dataset(dataset_spec, split))
    from kdviz.engine import dataset_logits

    return dataset_logits(ref, dataset_spec, split)


def evaluate_logits(
    ref: str | Path,
    dataset_spec: str | None = None,
    split: str = "test",
    teacher: str | Path | None = None,
) -> dict[str, Any]:
    """engine.evaluate for a logits card or file: the labels inside, or the split's with a dataset."""
    from kdviz.engine import logit_metrics

    table = _table_of(ref)
    if dataset_spec:
        from kdviz.data import load_dataset

        dataset = load_dataset(dataset_spec, split)
        logits, labels = _rows_for_split(table, dataset), dataset.labels
    elif table.labels is None:
        known = "" if is_logits_file(ref) else models.load_card(ref).dataset
        hint = f"--dataset {known} --split SPLIT" if known else "--dataset SPEC --split SPLIT"
        raise KdvizError(
            f"The logits {table.source!r} have no labels; give {hint} for the split their rows belong to."
        )
    else:
        logits, labels = table.logits, table.labels
    teacher_logits = None
    if teacher is not None:
        if dataset_spec:
            teacher_logits = source_logits(teacher, dataset_spec, split)
        else:
            other = _table_of(teacher) if is_logits_source(teacher) else None
            if other is None or other.logits.shape != logits.shape:
                raise KdvizError(
                    "Comparing with a teacher needs --dataset, or a teacher logits table with the same rows."
                )
            teacher_logits = other.logits
    metrics = logit_metrics(logits, labels, teacher_logits)
    card_dataset = "" if is_logits_file(ref) else models.load_card(ref).dataset
    metrics.update(
        {
            "checkpoint": table.source,
            "dataset": dataset_spec or card_dataset,
            "split": split if dataset_spec else "",
            "errors": int(round(metrics["n"] * (1.0 - metrics["accuracy"]))),
        }
    )
    if teacher is not None:
        metrics["teacher"] = str(teacher)
    from kdviz import stats

    summary = stats.accuracy_summary(logits, labels, table.class_names)
    metrics["accuracy_ci"] = summary["accuracy_ci"]  # as engine.evaluate: Wilson 95%
    metrics["per_class"] = summary["per_class"]
    return metrics


# ---------------------------------------------------------------------------- ONNX


def _ort_session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


class OnnxModule(nn.Module):
    """An ONNX classifier run by onnxruntime on the CPU: normalised float (N, C, H, W) -> float32
    logits (N, K). The session is created on first use; a graph with a fixed batch size is fed
    in batches of that size (the last one padded)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self._session: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # copy / pickle without the live session
        state = dict(self.__dict__)
        state["_session"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def session(self) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _ort_session(self.path)
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session()
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        array = x.detach().to("cpu", torch.float32).numpy()
        array = array.astype(_ORT_DTYPES.get(inp.type, np.float32), copy=False)
        step = fixed or 256  # bounded batches: onnxruntime's activations grow with the batch
        outs = []
        for start in range(0, len(array), step):
            chunk = array[start : start + step]
            rows = len(chunk)
            if fixed and rows < fixed:
                chunk = np.concatenate(
                    [chunk, np.zeros((fixed - rows, *chunk.shape[1:]), chunk.dtype)]
                )
            outs.append(np.asarray(session.run([out.name], {inp.name: chunk})[0])[:rows])
        if not outs:
            return torch.empty(0, 0, device=x.device)
        return torch.from_numpy(np.concatenate(outs).astype(np.float32)).to(x.device)


def _onnx_metadata(model: Any, source: Path) -> dict[str, Any]:
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            try:
                meta = json.loads(prop.value)
            except ValueError as err:
                raise KdvizError(
                    f"The {ONNX_METADATA_KEY} metadata in {source.name} is not valid JSON; export it again."
                ) from err
            if not isinstance(meta, dict):
                raise KdvizError(
                    f"The {ONNX_METADATA_KEY} metadata in {source.name} is not a JSON object; export it again."
                )
            return meta
    return {}


def _check_onnx_file(source: Path) -> Any:
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as err:  # DecodeError, ValidationError, ...
        raise KdvizError(
            f"{source.name} is not a valid ONNX model ({models._brief(err)}); export it again."
        ) from err
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) for t in model.graph.initializer):
        raise KdvizError(
            f"{source.name} keeps its weights in external data files; save it as one .onnx file."
        )
    return model


def _graph_shape(model: Any) -> list[Any]:
    """The first real graph input's dims: ints for fixed sizes, names (str) for dynamic ones."""
    initialisers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise KdvizError(
            f"The ONNX graph has {len(inputs)} inputs; kdviz runs classifiers with one image input."
        )
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _import_onnx(source: Path, stem: Path, flags: _Flags) -> Path:
    model = _check_onnx_file(source)
    meta = _onnx_metadata(model, source)
    dims = _graph_shape(model)
    ds = _dataset_info(flags.dataset)
    shape = (
        flags.in_shape
        or parse_input_shape(meta.get("in_shape"))
        or (tuple(ds.in_shape) if ds is not None else None)
    )
    if shape is None and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
        shape = tuple(int(d) for d in dims[1:])
    if shape is None:
        raise KdvizError(
            f"{source.name} does not say its input size; give --input-shape CxHxW (e.g. 3x224x224)."
        )
    fixed = [isinstance(d, int) and d > 0 for d in dims[1:]]
    if len(dims) != 4 or any(f and d != s for f, d, s in zip(fixed, dims[1:], shape, strict=True)):
        raise KdvizError(
            f"The ONNX graph takes input {dims} but the input shape is {tuple(shape)}; give "
            "--input-shape matching the graph (N x C x H x W)."
        )
    models._check_in_shape(shape)  # kdviz's size limits, before zeros of that shape are made
    k = _probe_onnx(source, dims, shape)
    meta_names = meta.get("class_names") if isinstance(meta.get("class_names"), list) else None
    meta_k = meta.get("num_classes", len(meta_names) if meta_names else k)
    if meta_k != k or (meta_names is not None and len(meta_names) != k):
        raise KdvizError(
            f"The {ONNX_METADATA_KEY} metadata of {source.name} says {meta_k} classes but the "
            f"graph outputs {k} logits; export the model again."
        )
    mean = flags.mean or meta.get("mean") or (ds.mean if ds else None)
    std = flags.std or meta.get("std") or (ds.std if ds else None)
    copy = models._with(stem, ".onnx")
    models._atomic_write(copy, lambda tmp: shutil.copyfile(source, tmp))
    card = models.ModelCard(
        name=stem.name,
        arch="onnx",
        kind="onnx",
        num_classes=k,
        class_names=_resolve_classes(k, flags, ds, meta_names, source.name),
        in_shape=list(shape),
        mean=_per_channel(mean, shape[0], "mean", 0.0),
        std=_per_channel(std, shape[0], "std", 1.0),
        dataset=flags.dataset or str(meta.get("dataset") or ""),
        weights_sha256=_file_sha256(copy),
        extra={"imported_from": source.name, "onnx_arch": str(meta.get("arch") or "")},
    )
    try:
        card.validate()
    except KdvizError:
        copy.unlink(missing_ok=True)
        raise
    models._write_card(card, stem)
    _drop_other_kinds(stem, ".onnx")
    _smoke_test(stem)
    return stem


def _probe_onnx(source: Path, dims: list[Any], shape: tuple[int, int, int]) -> int:
    """Run one batch of zeros; return the output width K (one sentence if the graph refuses)."""
    try:
        session = _ort_session(source)
        inp = session.get_inputs()[0]
        batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 2
        zeros = np.zeros((batch, *shape), _ORT_DTYPES.get(inp.type, np.float32))
        out = np.asarray(session.run(None, {inp.name: zeros})[0])
    except Exception as err:  # onnxruntime's InvalidArgument / Fail / RuntimeException
        raise KdvizError(
            f"The ONNX graph in {source.name} does not run on input {[dims[0], *shape]} "
            f"({models._brief(err)}); give the --input-shape it was exported with."
        ) from err
    if out.ndim != 2 or out.shape[0] != zeros.shape[0] or out.shape[1] < 2:
        raise KdvizError(
            f"The ONNX graph in {source.name} outputs shape {list(out.shape)} for a batch of "
            f"{zeros.shape[0]}, not (batch, classes) logits; export the classifier's logits."
        )
    return int(out.shape[1])
