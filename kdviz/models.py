"""Model registry (timm-style), checkpoint cards, and safe checkpoint loading.

A checkpoint is a pair: ``STEM.safetensors`` (weights) and ``STEM.json`` (the card). Loading never
unpickles: weights come from safetensors, or from a foreign ``STEM.pt`` state dict read with
``torch.load(weights_only=True)``. An ensemble teacher is a card (no weights) that lists members.
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import numbers
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from kdviz import paths
from kdviz.cards import (  # noqa: F401  (re-exported: the card and its limits were defined here)
    CARD_KINDS,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_INPUT_VALUES,
    MAX_PIXELS,
    MIN_STD,
    ModelCard,
    _in_shape_problem,
    _is_int,
    _is_real,
    _now_iso,
)
from kdviz.errors import KdvizError

__all__ = [
    "Ensemble",
    "ModelCard",
    "create_model",
    "list_checkpoints",
    "list_model_patterns",
    "list_models",
    "load_card",
    "load_checkpoint",
    "register_model",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_ensemble_card",
    "weights_hash",
]

# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

# A builder is called as builder(name, num_classes, in_shape, **kwargs) -> nn.Module.
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    key: str  # an exact name, or a glob pattern such as "mlp-*"
    builder: Builder
    examples: tuple[str, ...]  # names list_models() shows for a pattern
    description: str  # one line for a pattern, e.g. "mlp-H1-H2-... (any hidden sizes)"

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.key for ch in "*?[")


_MODELS: dict[str, _Entry] = {}  # registration order is list_models() order


def register_model(
    name_or_pattern: str, *, examples: tuple[str, ...] = (), description: str = ""
) -> Callable[[Builder], Builder]:
    """Register a lowercase builder under an exact name or a glob pattern (``"mlp-*"``).

    The builder is called as ``builder(name, num_classes, in_shape, **kwargs)``; a pattern
    builder parses what it needs from ``name`` and raises KdvizError when it cannot.
    """
    key = name_or_pattern.strip().lower()

    def decorator(builder: Builder) -> Builder:
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = _Entry(key, builder, tuple(examples), description or key)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names that create_model accepts, in registration order; patterns show their examples.

    Any ``mlp-H1-H2-...`` (hidden sizes) and any ``resnetD`` with D = 6n+2 also work; see
    list_model_patterns().
    """
    names: list[str] = []
    for entry in _MODELS.values():
        names.extend(entry.examples if entry.is_pattern else (entry.key,))
    return names


def list_model_patterns() -> list[str]:
    """One line per name pattern, e.g. ``"mlp-H1-H2-... (any hidden sizes)"``."""
    return [entry.description for entry in _MODELS.values() if entry.is_pattern]


def _valid_names_sentence() -> str:
    patterns = list_model_patterns()
    tail = f", or {' / '.join(patterns)}" if patterns else ""
    return f"{', '.join(list_models())}{tail}"


def _lookup(name: str) -> _Entry:
    entry = _MODELS.get(name)
    if entry is not None and not entry.is_pattern:
        return entry
    for entry in _MODELS.values():
        if entry.is_pattern and fnmatch.fnmatchcase(name, entry.key):
            return entry
    raise KdvizError(f"Unknown model {name!r}; choose one of {_valid_names_sentence()}.")


# Bounds checked BEFORE anything is allocated, so an absurd name, card or flag is a sentence,
# not a MemoryError. Generous for this app's models (the largest shipped has ~3M parameters).
MAX_PARAMS = 500_000_000  # parameters of one architecture; KDVIZ_MAX_PARAMS overrides it
MAX_LAYERS = 2000  # hidden layers of an mlp, depth of a resnet


def max_params() -> int:
    """The parameter limit: $KDVIZ_MAX_PARAMS when it is a positive integer, else MAX_PARAMS."""
    text = os.environ.get("KDVIZ_MAX_PARAMS", "").strip()
    return int(text) if text.isdigit() and 0 < len(text) < 19 and int(text) > 0 else MAX_PARAMS


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def _check_params(name: str, count: int, *, counted: bool = False) -> None:
    """Refuse an architecture whose parameter count is over the limit: estimated from its name, or
    ``counted`` on a model built without memory (a foreign one, on the meta device)."""
    limit = max_params()
    if count > limit:
        size, fix = (
            (f"has {count:,}", "a smaller model")
            if counted
            else (f"would have about {count:.3g}", "smaller layers")
        )
        raise KdvizError(
            f"The model {_short(name)!r} {size} parameters, over kdviz's limit of {limit:,}; "
            f"choose {fix} or fewer classes (or raise KDVIZ_MAX_PARAMS)."
        )


def _check_in_shape(in_shape: Any) -> tuple[int, int, int]:
    try:
        values = list(in_shape)
    except TypeError:
        values = []
    if not (
        len(values) == 3
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)
        and all(v > 0 for v in values)
    ):
        raise KdvizError(
            f"Input shape {in_shape!r} is not valid; give (channels, height, width) as three positive integers."
        )
    problem = _in_shape_problem([int(v) for v in values])
    if problem:
        raise KdvizError(
            f"Input shape {tuple(values)!r} has {problem}, over kdviz's limit; use smaller images."
        )
    return int(values[0]), int(values[1]), int(values[2])


def _check_num_classes(num_classes: Any) -> int:
    if not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
        raise KdvizError(
            f"Number of classes {num_classes!r} is not valid; give a whole number from 1 to {MAX_CLASSES:,} (the limit)."
        )
    return int(num_classes)


def create_model(
    name: str, num_classes: int, in_shape: tuple[int, int, int], **kwargs: Any
) -> nn.Module:
    """Build a registered model with freshly initialised weights (seed with torch.manual_seed).

    The model takes NORMALISED float input (N, C, H, W) and returns logits (N, num_classes).
    Unknown names and unsupported keyword arguments raise KdvizError.
    """
    if not isinstance(name, str):
        raise KdvizError(
            f"Model name {name!r} is not a string; choose one of {_valid_names_sentence()}."
        )
    name = name.strip().lower()
    entry = _lookup(name)
    num_classes = _check_num_classes(num_classes)
    shape = _check_in_shape(in_shape)
    try:
        inspect.signature(entry.builder).bind(name, num_classes, shape, **kwargs)
    except TypeError as err:
        params = [
            p.name
            for p in inspect.signature(entry.builder).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        accepted = ", ".join(params) if params else "none"
        raise KdvizError(
            f"Model {name!r} does not accept the options {sorted(kwargs)}; it accepts: {accepted}."
        ) from err
    try:
        return entry.builder(name, num_classes, shape, **kwargs)
    except MemoryError as err:  # the estimate was under the limit but the machine has less
        raise KdvizError(
            f"There is not enough memory to build {name!r} with {num_classes} classes and input "
            f"{shape}; choose a smaller model."
        ) from err


# ---------------------------------------------------------------------------------------------
# Ensembles (the registered architectures live in kdviz/architectures.py)
# ---------------------------------------------------------------------------------------------


class Ensemble(nn.Module):
    """An ensemble teacher: forward returns the mean of the members' log_softmax, (N, K).

    The mean of log-probabilities is the log of their (unnormalised) geometric mean, so the
    output is valid logits: softmax of it is the normalised geometric-mean distribution.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = [F.log_softmax(member(x), dim=1) for member in self.members]  # M x (N, K)
        return torch.stack(log_probs).mean(dim=0)  # (N, K)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

_SUFFIXES = (".safetensors", ".json", ".pt", ".onnx", ".npz")
_MAX_CARD_BYTES = 16 * 1024 * 1024  # a card is a few kB; refuse to parse something huge


def _brief(err: BaseException) -> str:
    """The first line of an underlying error, short enough to sit inside one sentence."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _strip_suffix(path: Path) -> Path:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)  # not with_suffix: stems may contain dots


def _stem_exists(stem: Path) -> bool:
    return any(_with(stem, suffix).is_file() for suffix in _SUFFIXES)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then os.replace (atomic on POSIX and NT)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_card(card: ModelCard, stem: str | Path) -> None:
    """Rewrite a checkpoint's JSON card atomically (e.g. new metrics), leaving its weights alone."""
    _write_card(card, _strip_suffix(Path(stem).expanduser()))


def _write_card(card: ModelCard, stem: Path) -> None:
    text = json.dumps(card.to_dict(), indent=2) + "\n"
    _atomic_write(_with(stem, ".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _hash_state(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_hash(model: nn.Module) -> str:
    """sha256 hex over the state dict in key order: each key, dtype, shape and raw bytes.

    Changes when any weight or buffer changes; used as the logit-cache key. Equals the card's
    weights_sha256 for a model returned by load_checkpoint.
    """
    return _hash_state(model.state_dict())


def _fresh_model(card: ModelCard) -> nn.Module:
    """The card's architecture, freshly built without moving the caller's RNG stream.

    (Built on the CPU, not the meta device: meta init imports torch._dynamo, seconds of start-up.)
    """
    with torch.random.fork_rng(devices=[]):
        return create_model(card.arch, card.num_classes, tuple(card.in_shape), **card.arch_kwargs)


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DistributedDataParallel saves "module.*", torch.compile "_orig_mod.*".
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _check_state(
    state: dict[str, torch.Tensor], model: nn.Module, card: ModelCard, source: Path
) -> None:
    """One KdvizError sentence for missing / unexpected keys or wrong shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(shape)}"
        for k, shape in ((k, t.shape) for k, t in expected.items())
        if k in state and tuple(state[k].shape) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(
            f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"
        )
    if wrong:
        problems.append(f"wrong shapes {'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")
    if problems:
        raise KdvizError(
            f"The weights in {source} do not fit the card's architecture {card.arch!r} with "
            f"{card.num_classes} classes and input {card.in_shape} ({'; '.join(problems)}); "
            "check the card's arch, arch_kwargs, num_classes and in_shape against the weights."
        )


def save_checkpoint(model: nn.Module, card: ModelCard, stem: str | Path) -> Path:
    """Write STEM.safetensors then STEM.json, each atomically; fill ``card.weights_sha256``.

    ``stem`` may also be given as STEM.safetensors or STEM.json. Returns the stem path.
    The card is checked first: its architecture must rebuild a model with these exact keys
    and shapes, so whatever is saved can be loaded.
    """
    stem = _strip_suffix(Path(stem).expanduser())
    if card.kind != "model":
        raise KdvizError(
            "save_checkpoint writes single models; use save_ensemble_card for ensembles."
        )
    if not card.name:
        card.name = stem.name
    if not card.class_names:
        card.class_names = [str(i) for i in range(card.num_classes)] if card.num_classes else []
    card.validate()
    state = _strip_wrapper_prefix(dict(model.state_dict()))
    fresh = _fresh_model(card)
    _check_state(state, fresh, card, stem)
    # Stored in the architecture's own dtypes, so the hash equals weights_hash(loaded model).
    expected = fresh.state_dict()
    state = {
        k: v.detach().to("cpu", expected[k].dtype).contiguous().clone() for k, v in state.items()
    }
    card.weights_sha256 = _hash_state(state)
    _atomic_write(
        _with(stem, ".safetensors"),
        lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "arch": card.arch}),
    )
    _write_card(card, stem)  # after the weights: a card never points at missing weights
    return stem


def _member_stem(member: str, card_dir: Path) -> Path:
    """A member ref: relative to the ensemble card's folder first, then the usual places."""
    candidate = _strip_suffix(Path(member).expanduser())
    if not candidate.is_absolute():
        candidate = card_dir / candidate
    if _stem_exists(candidate):
        return candidate
    try:
        return resolve_checkpoint(member)
    except KdvizError as err:
        raise KdvizError(
            f"The ensemble member {member!r} was not found next to the card in {card_dir} "
            "or among the known checkpoints; save it there or fix the card's members."
        ) from err


def _member_ref(member: str, member_stem: Path, card_dir: Path) -> str:
    """How a member is written in the card: a bare name found in the search places (e.g. a
    shipped checkpoint) stays bare; anything else becomes a path relative to the card."""
    as_given = Path(member).expanduser()
    if not (
        as_given.is_absolute() or _stem_exists(card_dir / _strip_suffix(as_given))
    ) and not _stem_exists(_strip_suffix(as_given)):
        return member
    return Path(os.path.relpath(member_stem.resolve(), card_dir)).as_posix()


def save_ensemble_card(card: ModelCard, stem: str | Path) -> Path:
    """Write STEM.json for an ensemble (kind "ensemble", no weights file); returns the stem.

    Members are stored relative to the card's folder; each must exist and agree with the card
    on the number of classes and the input shape.
    """
    stem = _strip_suffix(Path(stem).expanduser())
    card.kind, card.arch, card.arch_kwargs = "ensemble", "ensemble", {}
    if not card.name:
        card.name = stem.name
    if not card.class_names:
        card.class_names = [str(i) for i in range(card.num_classes)] if card.num_classes else []
    card.members = [str(m) if isinstance(m, Path) else m for m in card.members]
    card.validate()
    if not card.members:
        raise KdvizError("An ensemble card needs at least one member; list the member checkpoints.")
    card_dir = stem.parent.resolve()
    relative = []
    for member in card.members:
        member_stem = _member_stem(member, card_dir)
        member_card = load_card(member_stem)
        if member_card.num_classes != card.num_classes or member_card.in_shape != card.in_shape:
            raise KdvizError(
                f"The ensemble member {member!r} has {member_card.num_classes} classes and input "
                f"{member_card.in_shape}, but the ensemble card says {card.num_classes} and "
                f"{card.in_shape}; use members trained on the same data."
            )
        relative.append(_member_ref(member, member_stem, card_dir))
    card.members = relative
    card.weights_sha256 = ""
    _write_card(card, stem)
    return stem


def _search_roots() -> list[Path]:
    """Folders a relative ref is looked up in, in priority order (PRETRAINED_DIR read at call time).

    runs_dir() itself serves "RUN_ID/NAME"; each run folder (newest first) serves a bare NAME.
    """
    runs = paths.runs_dir()
    run_folders = sorted(
        (p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    return [Path(paths.PRETRAINED_DIR), paths.checkpoints_dir(), runs, *run_folders]


def resolve_checkpoint(ref: str | Path) -> Path:
    """The stem path for STEM.safetensors, STEM.json, STEM.pt, STEM, or a bare NAME.

    A relative ref that is not found as given is looked up under PRETRAINED_DIR, then
    checkpoints_dir(), then runs_dir() ("RUN_ID/NAME"), then runs_dir()/*/ (newest run first).
    """
    if not isinstance(ref, (str, Path)) or not str(ref).strip():
        raise KdvizError(f"Checkpoint reference {ref!r} is empty; give a checkpoint name or path.")
    given = Path(str(ref).strip()).expanduser()
    names_file = _strip_suffix(given) != given  # STEM.json etc.: that very file must exist

    def found(path: Path) -> bool:
        # a bare NAME needs its card: a stray NAME.onnx or NAME.pt in the working folder
        # must not hide the imported checkpoint NAME
        return path.is_file() if names_file else _with(path, ".json").is_file()

    if found(given):
        return _strip_suffix(given)
    tried = [str(given)]
    if not given.is_absolute():
        for root in _search_roots():
            if found(root / given):
                return _strip_suffix(root / given)
        runs = paths.runs_dir()
        tried += [str(paths.PRETRAINED_DIR), str(paths.checkpoints_dir()), str(runs), f"{runs}/*/"]
    raise KdvizError(
        f"No checkpoint {str(ref)!r} was found (tried {', '.join(tried)}); "
        "give the path of a .safetensors or .json file, or a name from `kdviz list`."
    )


def _read_card(stem: Path) -> ModelCard:
    path = _with(stem, ".json")
    if not path.is_file():
        raise KdvizError(
            f"The checkpoint {stem} has no card {path.name}; register the file with `kdviz import FILE --name NAME` or write a card beside it."
        )
    try:
        if path.stat().st_size > _MAX_CARD_BYTES:
            raise ValueError("card too large")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise KdvizError(
            f"The card {path} is not valid JSON ({_brief(err)}); fix it or re-save the checkpoint."
        ) from err
    except RecursionError as err:  # json.loads of [[[[...]]]] thousands deep
        raise KdvizError(
            f"The card {path} nests JSON too deeply to read; fix it or re-save the checkpoint."
        ) from err
    try:
        card = ModelCard.from_dict(data)
    except KdvizError as err:
        raise KdvizError(f"{path}: {err}") from err
    if not card.name:
        card.name = stem.name
    return card


def load_card(ref: str | Path) -> ModelCard:
    """The validated card of a checkpoint (any ref form resolve_checkpoint accepts)."""
    return _read_card(resolve_checkpoint(ref))


# What holds a card's weights, by kind, in the order _read_state prefers them.
_WEIGHT_FILES = {"model": (".safetensors", ".pt"), "onnx": (".onnx",), "logits": (".npz",)}
_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> sha256


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file's bytes, memoised in-process by (path, inode, size, mtime_ns).

    A rewritten file (save_checkpoint replaces it) gets a new key, so a memoised hash is never
    stale; a repeated lookup costs one stat.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        if len(_FILE_HASHES) > 1024:
            _FILE_HASHES.clear()
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def _weights_file(stem: Path, card: ModelCard) -> Path:
    suffixes = _WEIGHT_FILES.get(card.kind, tuple(s for v in _WEIGHT_FILES.values() for s in v))
    for suffix in suffixes:
        if _with(stem, suffix).is_file():
            return _with(stem, suffix)
    raise KdvizError(
        f"The checkpoint {stem} has a card but no weights ({' or '.join(stem.name + s for s in suffixes)}); "
        "save the weights beside the card."
    )


def _node_fingerprint(node: _CardNode) -> str:
    card = node.card
    if card.kind == "ensemble":
        text = "ensemble:" + ",".join(_node_fingerprint(m) for m in node.members)
    else:  # the file's bytes, plus what decides how they are run
        how = json.dumps([card.kind, card.arch, card.arch_kwargs], sort_keys=True, default=str)
        text = f"{how}:{file_sha256(_weights_file(node.stem, card))}"
    return hashlib.sha256(text.encode()).hexdigest()


def card_fingerprint(ref: str | Path) -> str:
    """A hash naming what a checkpoint computes: the sha256 of its weights file's BYTES (plus
    its kind, arch and arch_kwargs); an ensemble's combines its members'.

    Never read from an editable card field such as ``weights_sha256``, so two checkpoints with
    different weights never share a key. The logit cache is keyed by it; the hash is memoised
    per file, so a cached lookup never has to load a model.
    """
    return _node_fingerprint(_card_tree(resolve_checkpoint(ref)))


def _read_state(stem: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Tensors from STEM.safetensors, else from a foreign STEM.pt (weights_only: never code)."""
    st_path, pt_path = _with(stem, ".safetensors"), _with(stem, ".pt")
    if st_path.is_file():
        try:
            return load_file(str(st_path), device="cpu"), st_path
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise KdvizError(
                f"The weights file {st_path} is truncated or not a safetensors file; re-save or re-download it."
            ) from err
    if pt_path.is_file():
        # weights_only=True: the restricted unpickler refuses every global outside torch's
        # tensor allowlist, so a payload (os.system, open, ...) is rejected, never called.
        try:
            obj = torch.load(pt_path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError for code, RuntimeError if corrupt
            raise KdvizError(
                f"The file {pt_path} is not a plain tensor state dict (it is corrupt or holds "
                "Python objects, which kdviz never unpickles); save model.state_dict() or use safetensors."
            ) from err
        return _unwrap_state_dict(obj, pt_path), pt_path
    raise KdvizError(
        f"The checkpoint {stem} has a card but no weights ({st_path.name} or {pt_path.name}); "
        "save the weights beside the card."
    )


def _unwrap_state_dict(obj: Any, source: Path) -> dict[str, torch.Tensor]:
    # Common foreign layouts: {"state_dict": {...}} or {"model": {...}}; wrapper prefixes dropped.
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise KdvizError(
            f"The file {source} is not a state dict of named tensors; save model.state_dict() with torch.save."
        )
    return _strip_wrapper_prefix(dict(obj))


def _load_single(stem: Path, card: ModelCard) -> nn.Module:
    state, source = _read_state(stem)
    model = _fresh_model(card)
    _check_state(state, model, card, source)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # e.g. a value that cannot be cast into the parameter's dtype
        raise KdvizError(
            f"The weights in {source} could not be loaded into {card.arch!r} ({_brief(err)}); re-save the checkpoint."
        ) from err
    model.eval()
    if card.weights_sha256 and weights_hash(model) != card.weights_sha256:
        raise KdvizError(
            f"The weights in {source} do not match the card's weights_sha256 (one file was replaced "
            "without the other); re-save the checkpoint, or import its weights file again."
        )
    return model


MAX_ENSEMBLE_DEPTH = 4  # ensembles of ensembles, at most this many levels of cards
MAX_ENSEMBLE_MEMBERS = 64  # member references in one ensemble tree, all levels together


@dataclass(frozen=True)
class _CardNode:
    """A checkpoint's card and, for an ensemble, its members' nodes (read, not loaded)."""

    stem: Path
    card: ModelCard
    members: tuple[_CardNode, ...] = ()


def _card_tree(stem: Path) -> _CardNode:
    """Read a card and, for an ensemble, its members' cards, refusing cycles, trees deeper than
    MAX_ENSEMBLE_DEPTH and more than MAX_ENSEMBLE_MEMBERS members before anything is loaded.

    load_checkpoint and card_fingerprint both walk this tree, so both refuse the same cards.
    """
    count = 0

    def walk(stem: Path, seen: tuple[Path, ...]) -> _CardNode:
        nonlocal count
        card = _read_card(stem)
        if card.kind != "ensemble":
            return _CardNode(stem, card)
        if not card.members:
            raise KdvizError(f"The ensemble card {stem} lists no members; add member checkpoints.")
        key = stem.resolve()
        if key in seen:
            raise KdvizError(
                f"The ensemble card {stem} includes itself through its members; fix its members list."
            )
        if len(seen) >= MAX_ENSEMBLE_DEPTH:
            raise KdvizError(
                f"The ensemble card {stem} nests ensembles more than {MAX_ENSEMBLE_DEPTH} levels "
                "deep (the limit); list the single models as members instead."
            )
        count += len(card.members)
        if count > MAX_ENSEMBLE_MEMBERS:
            raise KdvizError(
                f"The ensemble card {stem} has more than {MAX_ENSEMBLE_MEMBERS} members in all "
                "(the limit, counting nested ensembles); use fewer members."
            )
        members = tuple(
            walk(_member_stem(m, stem.parent.resolve()), (*seen, key)) for m in card.members
        )
        return _CardNode(stem, card, members)

    return walk(stem, ())


def _load_node(node: _CardNode) -> nn.Module:
    stem, card = node.stem, node.card
    if card.kind == "model":
        model = _load_single(stem, card)
    elif card.kind == "onnx":
        from kdviz.importers import OnnxModule  # onnxruntime only when an ONNX model is used

        model = OnnxModule(_weights_file(stem, card))
    elif card.kind == "logits":
        raise KdvizError(
            f"{card.name!r} is a table of logits, not a model, so it cannot run on images; use it "
            "where logits are enough (evaluate, the explorer, a distillation teacher)."
        )
    else:
        for member_name, member in zip(card.members, node.members, strict=True):
            if member.card.num_classes != card.num_classes:
                raise KdvizError(
                    f"The ensemble member {member_name!r} has {member.card.num_classes} classes but the "
                    f"ensemble card {stem} says {card.num_classes}; use members with the same classes."
                )
        model = Ensemble([_load_node(member) for member in node.members]).eval()
    check_forward(
        model, card, f"The checkpoint {stem}",
        fix_shape="check the card's in_shape", fix_classes="fix num_classes in the card",
    )  # fmt: skip
    return model


def check_forward(
    model: nn.Module, card: ModelCard, what: str, *, fix_shape: str, fix_classes: str
) -> None:
    """A shape smoke test: one zero image of ``card.in_shape`` must give (1, K) logits, else one
    sentence starting with ``what`` and ending with the fix."""
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, *card.in_shape))
    except RuntimeError as err:
        raise KdvizError(
            f"{what} fails on an input of shape {tuple(card.in_shape)} ({_brief(err)}); {fix_shape}."
        ) from err
    if tuple(out.shape) != (1, card.num_classes):
        raise KdvizError(
            f"{what} outputs {tuple(out.shape)} for one image, not (1, {card.num_classes}) "
            f"logits; {fix_classes}."
        )


def load_checkpoint(
    ref: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """(model in eval mode on ``device``, card). An ensemble card gives an Ensemble module.

    Never unpickles arbitrary objects; a corrupt or unsafe file, wrong shapes or a class-count
    mismatch raise KdvizError and nothing in the file is executed.
    """
    node = _card_tree(resolve_checkpoint(ref))
    return _load_node(node).to(device).eval(), node.card


def _card_files(root: Path, recursive: bool) -> Iterator[Path]:
    if not root.is_dir():
        return iter(())
    return iter(sorted(root.rglob("*.json") if recursive else root.glob("*.json")))


def list_checkpoints() -> list[tuple[str, Path, ModelCard]]:
    """(display name, stem path, card) for every loadable-looking checkpoint, in the order
    pretrained, checkpoints_dir(), runs_dir()/*/. Display names are unique and resolve back
    with resolve_checkpoint; files that are not valid cards (or lack weights) are skipped."""
    runs = paths.runs_dir()
    places: list[tuple[Path, Path]] = []  # (root, card file)
    for root in (Path(paths.PRETRAINED_DIR), paths.checkpoints_dir()):
        places += [(root, f) for f in _card_files(root, recursive=True)]
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        places += [(runs, f) for f in _card_files(run, recursive=False)]
    found: list[tuple[str, Path, ModelCard]] = []
    taken: set[str] = set()
    for root, card_file in places:
        stem = _strip_suffix(card_file)
        try:
            card = _read_card(stem)
        except KdvizError:
            continue
        if card.kind != "ensemble" and not any(
            _with(stem, suffix).is_file() for suffix in _WEIGHT_FILES[card.kind]
        ):
            continue
        display = stem.relative_to(root).as_posix()
        if display in taken:
            display = str(stem)  # an absolute path is unique and still resolves
        taken.add(display)
        found.append((display, stem, card))
    return found


# The built-in architectures register themselves on import; at the end, so that registry and
# limits above exist when kdviz.architectures imports them (either module may be imported first).
from kdviz import architectures as _architectures  # noqa: E402, F401
