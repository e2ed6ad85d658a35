"""The sidebar's "Your own data": uploads of images, logits files and model files.

Uploads are stored under KDVIZ_HOME/uploads/<sha256 of the bytes>/ (the same upload twice is
stored once), size-limited, and never unpickled. A zip of one folder per class, or loose images
named CLASS_anything.png, becomes the dataset spec ``folder:KDVIZ_HOME/uploads/<sha>/images``;
a logits or model file is registered as a checkpoint with kdviz.importers.import_source.
The functions above ``render`` do not touch Streamlit, so plain tests can call them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kdviz import data, paths
from kdviz.errors import KdvizError

MAX_UPLOAD_BYTES = 200 * 1024**2  # one upload, as sent; = server.maxUploadSize (config.toml)
MAX_UNZIPPED_BYTES = 1024**3  # all members of a zip, uncompressed
MAX_FILES = 50_000  # images in one upload
MAX_IMAGE_PIXELS = 4096 * 4096  # per image: a decompression bomb is refused before decoding
LOGITS_SUFFIXES = (".npz", ".npy", ".csv", ".parquet", ".pt")
MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".safetensors")
UPLOAD_TYPES = ["zip", *[s[1:] for s in data.IMAGE_EXTENSIONS], "npz", "npy", "csv", "parquet"]
UPLOAD_TYPES += ["pt", "pth", "onnx", "safetensors"]
_META = "upload.json"  # what the upload was: {"file": original name, "kind": ..., ...}
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """What one upload became on disk."""

    kind: str  # "images" | "logits" | "model"
    sha: str  # sha256 of the bytes (of all files, for loose images)
    path: Path  # the images folder, or the stored file
    title: str  # the original file name(s), for captions

    @property
    def spec(self) -> str:
        """The dataset spec of an images upload."""
        return f"folder:{self.path}"


def uploads_dir() -> Path:
    folder = paths.kdviz_home() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _sha(blobs: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()


def _safe_file_name(name: str) -> str:
    """A plain file name from an uploaded one (browsers send names, never paths; be sure)."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip("._") or "upload"
    return base[-100:]


def _check_size(size: int, what: str) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise KdvizError(
            f"{what} is {size / 1024**2:.0f} MB, over the {MAX_UPLOAD_BYTES // 1024**2} MB an "
            "upload may have; import it with `kdviz import` on the server instead."
        )


def _check_image(blob: bytes, name: str) -> None:
    """Refuse what is not an image, or whose pixel count is a decompression bomb (header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise KdvizError(f"{name} is not a readable image ({err}); fix or remove it.") from err
    if width * height > MAX_IMAGE_PIXELS:
        raise KdvizError(
            f"{name} is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,} an uploaded image "
            "may have; scale the images down first."
        )


def _finish(folder: Path, tmp: Path, meta: dict) -> None:
    """Move a fully written temporary folder into place (another session may have won)."""
    (tmp / _META).write_text(json.dumps(meta), encoding="utf-8")
    try:
        tmp.rename(folder)
    except OSError:
        if not (folder / _META).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _stored(sha: str) -> Path | None:
    folder = uploads_dir() / sha
    return folder if (folder / _META).is_file() else None


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- images


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """The member's path parts, None for what is skipped (folders, hidden files, macOS forks);
    KdvizError for a member that would escape the folder or is a link."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise KdvizError(f"The zip member {info.filename!r} has an absolute path; zip a folder.")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise KdvizError(f"The zip member {info.filename!r} points outside the zip; zip a folder.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise KdvizError(f"The zip member {info.filename!r} is a symbolic link; zip the files.")
    if info.is_dir() or not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return parts


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The member's bytes, reading at most ``budget`` (the declared size may lie)."""
    out = bytearray()
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK):
            out += chunk
            if len(out) > budget:
                raise KdvizError(
                    f"The zip unpacks to more than {MAX_UNZIPPED_BYTES // 1024**2} MB; "
                    "upload a smaller sample of the images."
                )
    return bytes(out)


def _zip_images(blob: bytes) -> list[tuple[tuple[str, ...], bytes]]:
    """(path parts, bytes) of every image in a zip, checked; folders wrapping it all dropped."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
    except zipfile.BadZipFile as err:
        raise KdvizError("The upload is not a readable zip file; zip the folder again.") from err
    with archive:
        members = [(info, _member_parts(info)) for info in archive.infolist()]
        members = [
            (i, p) for i, p in members if p and p[-1].lower().endswith(data.IMAGE_EXTENSIONS)
        ]
        if len(members) > MAX_FILES:
            raise KdvizError(
                f"The zip holds {len(members):,} images, over the {MAX_FILES:,} an upload may "
                "have; upload a sample."
            )
        if sum(info.file_size for info, _ in members) > MAX_UNZIPPED_BYTES:
            raise KdvizError(
                f"The zip unpacks to more than {MAX_UNZIPPED_BYTES // 1024**2} MB; "
                "upload a smaller sample of the images."
            )
        files, budget = [], MAX_UNZIPPED_BYTES
        for info, parts in members:
            content = _read_member(archive, info, budget)
            budget -= len(content)
            files.append((parts, content))
    # "mydata/cat/1.png", "mydata/dog/2.png": the one folder around everything is not a class
    while files and len({p[0] for p, _ in files}) == 1 and _wrapped(files):
        files = [(p[1:], b) for p, b in files]
    return files


def _wrapped(files: list[tuple[tuple[str, ...], bytes]]) -> bool:
    """Whether the one top folder is a wrapper: it holds class folders, or prefixed images."""
    if all(len(p) > 2 for p, _ in files):
        return True
    return all(len(p) == 2 and re.match(r"^[^_\-]+[_\-]", p[1]) for p, _ in files)


def class_from_name(name: str) -> str:
    """The class of a loose image: its file name up to the first '_' or '-' ("cat_01.png" -> "cat")."""
    stem = PurePosixPath(name).name
    match = re.match(r"^([^_\-]+)[_\-]", stem)
    if not match:
        raise KdvizError(
            f"The image {stem!r} has no class prefix; name loose images CLASS_anything.png "
            "(e.g. cat_001.png), or zip one folder per class."
        )
    return match.group(1)


def _layout(files: list[tuple[tuple[str, ...], bytes]]) -> list[tuple[str, bytes]]:
    """Relative target paths under images/: CLASS/FILE, or train|test/CLASS/FILE when the zip
    has both; images directly at the top take their class from the file-name prefix."""
    top = {p[0] for p, _ in files if len(p) > 1}
    split = {"train", "test"} <= top
    out = []
    for parts, blob in files:
        if split and parts[0] in ("train", "test") and len(parts) > 2:
            rel = f"{parts[0]}/{parts[1]}"
        elif split:
            continue  # e.g. a README image beside train/ and test/
        elif len(parts) == 1:
            rel = class_from_name(parts[0])
        else:
            rel = parts[0]  # deeper folders belong to their class folder, like ImageFolder
        rel += "/" + "_".join(_safe_file_name(p) for p in parts[(2 if split else 1) :] or parts)
        out.append((rel, blob))
    return out


def _write_images(sha: str, layout: list[tuple[str, bytes]], meta: dict) -> Path:
    if not layout:
        raise KdvizError(
            f"The upload holds no images ({', '.join(data.IMAGE_EXTENSIONS)}); "
            "zip one folder of images per class."
        )
    classes = {rel.split("/")[-2] for rel, _ in layout}
    if len(classes) < 2:
        raise KdvizError(
            "The upload has only one class; give at least two (one folder, or one file-name "
            "prefix, per class)."
        )
    for rel, blob in layout:
        _check_image(blob, rel)
    folder = uploads_dir() / sha
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=uploads_dir()))
    try:
        for rel, blob in layout:
            target = tmp / "images" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
        _finish(folder, tmp, {**meta, "kind": "images", "classes": len(classes)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "images"


def ingest_zip(blob: bytes, file_name: str = "images.zip") -> Upload:
    """A zip of one folder per class (or train/ and test/ of those) -> an images upload."""
    _check_size(len(blob), file_name)
    sha = _sha([blob])
    folder = (
        _stored(sha)
        or _write_images(
            sha, _layout(_zip_images(blob)), {"file": _safe_file_name(file_name)}
        ).parent
    )
    return Upload("images", sha, folder / "images", _safe_file_name(file_name))


def ingest_images(files: Sequence[tuple[str, bytes]]) -> Upload:
    """Loose images, each named CLASS_anything.ext -> an images upload."""
    files = sorted((_safe_file_name(name), blob) for name, blob in files)
    _check_size(sum(len(b) for _, b in files), "The upload")
    if len(files) > MAX_FILES:
        raise KdvizError(f"{len(files):,} images is over the {MAX_FILES:,} an upload may have.")
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise KdvizError("Two uploaded images have the same file name; rename one of them.")
    sha = _sha([_sha([n.encode(), b]).encode() for n, b in files])
    title = f"{len(files)} images"
    if _stored(sha) is None:
        layout = [(f"{class_from_name(n)}/{n}", b) for n, b in files]
        _write_images(sha, layout, {"file": title})
    return Upload("images", sha, uploads_dir() / sha / "images", title)


# --------------------------------------------------------------------------- files to import


def store_file(blob: bytes, file_name: str) -> Upload:
    """Keep a logits or model file as uploads/<sha>/<name>, unread (importing reads it)."""
    _check_size(len(blob), file_name)
    safe = _safe_file_name(file_name)
    suffix = PurePosixPath(safe).suffix.lower()
    if suffix not in LOGITS_SUFFIXES + MODEL_SUFFIXES:
        raise KdvizError(
            f"kdviz cannot read {file_name!r}; upload images, a zip, logits or a model."
        )
    kind = "logits" if suffix in LOGITS_SUFFIXES and suffix != ".pt" else "model"
    sha = _sha([blob])
    folder = _stored(sha)
    if folder is None:
        folder = uploads_dir() / sha
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=uploads_dir()))
        try:
            (tmp / safe).write_bytes(blob)
            _finish(folder, tmp, {"file": safe, "kind": kind})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    stored = folder / read_meta(folder).get("file", safe)
    return Upload(kind, sha, stored, safe)


def store_upload(files: Sequence[tuple[str, bytes]]) -> Upload:
    """Whatever was uploaded: one zip, several images, or one logits / model file."""
    if not files:
        raise KdvizError("Nothing was uploaded; pick a file.")
    lowered = [name.lower() for name, _ in files]
    if all(n.endswith(data.IMAGE_EXTENSIONS) for n in lowered):
        return ingest_images(files)
    if len(files) > 1:
        raise KdvizError(
            "Upload one zip, one logits file, one model file, or several images at a time."
        )
    name, blob = files[0]
    if lowered[0].endswith(".zip"):
        return ingest_zip(blob, name)
    return store_file(blob, name)


def list_uploaded_datasets() -> list[str]:
    """Dataset specs of the image uploads under KDVIZ_HOME, oldest first."""
    found = [
        f
        for f in uploads_dir().iterdir()
        if f.is_dir() and not f.name.startswith(".") and (f / "images").is_dir()
    ]
    return [f"folder:{f / 'images'}" for f in sorted(found, key=lambda f: f.stat().st_mtime)]


def upload_of(spec: str) -> Path | None:
    """The upload folder a dataset spec names, or None when it is not an upload."""
    if not spec.startswith("folder:"):
        return None
    path = Path(spec.partition(":")[2])
    try:
        rel = path.resolve().relative_to(uploads_dir().resolve())
    except (OSError, ValueError):
        return None
    return uploads_dir() / rel.parts[0] if rel.parts else None


def split_note(spec: str, split: str) -> str:
    """What a folder dataset is (an upload: its file name and classes), which split the user
    is seeing and whether kdviz carved it."""
    if not spec.startswith("folder:"):
        return ""
    root = Path(spec.partition(":")[2]).expanduser()
    upload = upload_of(spec)
    meta = read_meta(upload) if upload else {}
    what = "The folder"
    if meta:
        what = f"Your upload {meta.get('file', '')} ({meta.get('classes', '?')} classes)."
    if (root / "train").is_dir() and (root / "test").is_dir():
        if split == "val":
            return (
                f"{what} The val split shown is {data.VAL_FRACTION:.0%} of each class of its "
                f"train/ folder, carved with seed {data.SEED}."
            )
        return f"{what} The {split} split shown is its own {split}/ folder."
    share = {
        "test": f"{data.TEST_FRACTION:.0%} of each class",
        "val": f"{data.VAL_FRACTION:.0%} of what the test split leaves of each class",
        "train": "what the test and val splits leave",
    }[split]
    return (
        f"{what} The {split} split shown is {share}, carved with seed {data.SEED}: "
        "there are no train/ and test/ folders."
    )


# --------------------------------------------------------------------------- importing


def _slug(file_name: str) -> str:
    stem = PurePosixPath(file_name).stem
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:60] or "upload"


def _taken(name: str) -> bool:
    folders = (paths.checkpoints_dir(), Path(paths.PRETRAINED_DIR))
    return any((f / f"{name}{s}").exists() for f in folders for s in (".json", ".safetensors"))


def free_name(file_name: str) -> str:
    """A checkpoint name from a file name that no checkpoint in KDVIZ_HOME has yet."""
    base = _slug(file_name)
    name, n = base, 1
    while _taken(name):
        n += 1
        name = f"{base}-{n}"
    return paths.check_name(name, "checkpoint name")


def imported_name(upload: Upload) -> str | None:
    """The checkpoint this very upload was imported as before, when it is still there."""
    name = read_meta(upload.path.parent).get("imported", "")
    return name if name and _taken(name) else None


def import_upload(upload: Upload, name: str | None = None, **options) -> str:
    """Register a stored logits or model file as a checkpoint (kdviz.importers.import_source)
    and return its name; an upload imported before with no new options is not imported again."""
    from kdviz import importers

    if name is None and not options:
        again = imported_name(upload)
        if again:
            return again
    name = paths.check_name(name or free_name(upload.title), "checkpoint name")
    if _taken(name):
        raise KdvizError(f"A checkpoint named {name!r} exists already; pick another name.")
    stem = importers.import_source(upload.path, name, **options)
    meta_file = upload.path.parent / _META
    meta = read_meta(upload.path.parent)
    meta_file.write_text(json.dumps({**meta, "imported": Path(stem).name}), encoding="utf-8")
    return Path(stem).name


def parse_floats(text: str, what: str) -> list[float] | None:
    """'0.5, 0.5, 0.5' -> [0.5, 0.5, 0.5]; empty -> None."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return [float(p) for p in parts] or None
    except ValueError as err:
        raise KdvizError(
            f"The {what} {text!r} is not a list of numbers; write e.g. 0.5, 0.5, 0.5."
        ) from err


def parse_shape(text: str) -> list[int] | None:
    """'3x32x32' (or 3,32,32) -> [3, 32, 32]; empty -> None."""
    parts = [p for p in re.split(r"[x×,\s]+", text.strip().lower()) if p]
    if not parts:
        return None
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise KdvizError(f"The input shape {text!r} is not C×H×W; write e.g. 3x32x32.")
    return [int(p) for p in parts]


# --------------------------------------------------------------------------- the sidebar section
# Streamlit from here on. An upload is handled in the run that sees it; the view it asks for
# (dataset, teacher or student) is applied at the start of the next run, before the widgets
# that show it exist (Streamlit refuses to change a widget's value after it is drawn).

KEY_UPLOAD, KEY_ROLE = "own_upload", "own_role"
_PENDING_VIEW, _PENDING_MODEL = "_own_pending_view", "_own_pending_model"
_DONE, _MESSAGE = "_own_done", "_own_message"
ROLES = {"Teacher": "teacher", "Student": "student"}  # labels -> the sidebar pickers' keys

UPLOAD_HELP = (
    "**Images**: a zip of one folder per class (like torchvision's ImageFolder; train/ and "
    "test/ folders are used when both are there, else a seeded test split is carved), or "
    "several images whose class is the file name up to the first `_` or `-` "
    "(`cat_001.png` is a cat). **Logits**: .npz (`logits`, optional `labels` and "
    "`class_names`), .npy, .csv or .parquet (one column per class, optional `label`). "
    "**A model**: .onnx, or a .pt/.pth/.safetensors state dict with its architecture. "
    f"At most {MAX_UPLOAD_BYTES // 1024**2} MB; nothing uploaded is ever unpickled."
)


def apply_pending() -> None:
    """Put what the last upload asked for into the view (call before any sidebar widget)."""
    import streamlit as st

    for key, value in st.session_state.pop(_PENDING_VIEW, {}).items():
        st.session_state[key] = value


def pending_model() -> Upload | None:
    """A model file waiting for its form (architecture, input shape, ...)."""
    import streamlit as st

    return st.session_state.get(_PENDING_MODEL)


def _say(kind: str, text: str) -> None:
    import streamlit as st

    st.session_state[_MESSAGE] = (kind, text)


def _switch(view: dict, message: str) -> None:
    """Ask for ``view`` from the next run on, say ``message`` there, and rerun now."""
    import streamlit as st

    from kdviz.ui import cache

    cache.checkpoint_list.clear()
    st.session_state[_PENDING_VIEW] = view
    _say("success", message)
    st.rerun()


def _fits(name: str, dataset) -> str:
    """Why an imported checkpoint does not fit the current dataset ("" when it does)."""
    from kdviz import models
    from kdviz.ui import cache

    if dataset is None:
        return "no dataset is loaded"
    stem = str(models.resolve_checkpoint(name))
    card = models.load_card(stem)
    if card.num_classes != dataset.num_classes:
        return f"it has {card.num_classes} classes and {dataset.spec} has {dataset.num_classes}"
    if card.kind == "logits":
        rows = cache.table_rows(stem, cache.stem_mtime(stem))
        if rows != len(dataset):
            return f"it has {rows:,} rows and the {dataset.split} split has {len(dataset):,}"
    elif list(card.in_shape) != list(dataset.in_shape):
        return f"it takes {card.in_shape} inputs and {dataset.spec} has {list(dataset.in_shape)}"
    return ""


def _use_imported(name: str, dataset) -> None:
    """Show an imported checkpoint in the role the user chose; a table of logits that does not
    fit the current dataset becomes the data itself (no images)."""
    import streamlit as st

    from kdviz import models
    from kdviz.ui import cache

    role = ROLES[st.session_state.get(KEY_ROLE, "Teacher")]
    why = _fits(name, dataset)
    if not why:
        _switch({role: name}, f"Imported {name!r}; it is now the {role}.")
    if models.load_card(name).kind == "logits":
        _switch(
            {"dataset": cache.TABLE_PREFIX + name, role: name},
            f"Imported {name!r}; its rows do not match the dataset ({why}), so the explorer "
            "shows the table on its own, without images.",
        )
    _say("warning", f"Imported {name!r}, but it does not fit the current data: {why}.")


def _handle(files, dataset) -> None:
    import streamlit as st

    upload = store_upload([(f.name, f.getvalue()) for f in files])
    if upload.kind == "images":
        meta = read_meta(upload.path.parent)
        _switch(
            {"dataset": upload.spec},
            f"Your upload {upload.title}: {meta.get('classes', '?')} classes; showing its images.",
        )
    if upload.kind == "logits":
        _use_imported(import_upload(upload), dataset)
    else:
        st.session_state[_PENDING_MODEL] = upload


def render(dataset) -> None:
    """The uploader (and the form a model file needs); ``dataset`` is the current one or None."""
    import streamlit as st

    st.radio(
        "Use an uploaded model or logits as",
        list(ROLES),
        key=KEY_ROLE,
        horizontal=True,
    )
    files = st.file_uploader(
        "Upload images, logits or a model",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key=KEY_UPLOAD,
        help=UPLOAD_HELP,
        max_upload_size=MAX_UPLOAD_BYTES // 1024**2,
    )
    done = st.session_state.setdefault(_DONE, set())
    new = [f for f in files or [] if f.file_id not in done]
    if new:
        done.update(f.file_id for f in new)
        try:
            with st.spinner("Reading the upload…"):
                _handle(new, dataset)
        except KdvizError as err:
            _say("error", str(err))
    if pending_model() is not None:
        _model_form(pending_model(), dataset)


def show_message() -> None:
    """What the last upload did, once (outside the expander, which a rerun may close)."""
    import streamlit as st

    kind, text = st.session_state.pop(_MESSAGE, ("", ""))
    if kind:
        getattr(st, kind)(text, icon=":material/" + _ICONS[kind] + ":")


_ICONS = {"success": "check_circle", "warning": "warning", "error": "error"}


def _model_form(upload: Upload, dataset) -> None:
    """Architecture, input shape, normalisation and classes of an uploaded model file; the
    defaults come from the current dataset."""
    import streamlit as st

    onnx = upload.path.suffix.lower() == ".onnx"
    shape = "×".join(str(v) for v in dataset.in_shape) if dataset is not None else ""
    mean = ", ".join(f"{v:g}" for v in dataset.mean) if dataset is not None else ""
    std = ", ".join(f"{v:g}" for v in dataset.std) if dataset is not None else ""
    with st.form("own_model_form"):
        st.caption(f"Describe {upload.title}; the defaults are the current dataset's.")
        name = st.text_input("Name", value=free_name(upload.title), key="own_name")
        arch = st.text_input(
            "Architecture",
            key="own_arch",
            placeholder="not needed for ONNX" if onnx else "torchvision:resnet18",
            disabled=onnx,
            help="torchvision:NAME, timm:NAME, or a kdviz model such as mlp-800-800 or "
            "lenet5. Leave it empty for a .pt file that holds logits, not weights.",
        )
        shape_text = st.text_input("Input shape (C×H×W)", value=shape, key="own_shape")
        left, right = st.columns(2)
        mean_text = left.text_input("Mean", value=mean, key="own_mean", help="Per channel, 0–1.")
        std_text = right.text_input("Std", value=std, key="own_std", help="Per channel, 0–1.")
        classes = st.text_input(
            "Classes",
            key="own_classes",
            placeholder="the dataset's" if dataset is not None else "a, b, c, …",
            help="Comma-separated class names, in the model's output order; empty: the "
            "current dataset's.",
        )
        left, right = st.columns(2)
        ok = left.form_submit_button("Import", type="primary", width="stretch")
        cancel = right.form_submit_button("Cancel", width="stretch")
    if cancel:
        st.session_state.pop(_PENDING_MODEL, None)
        st.rerun()
    if ok:
        try:
            names = [c.strip() for c in classes.split(",") if c.strip()] or (
                list(dataset.class_names) if dataset is not None else None
            )
            options = {
                "arch": arch.strip() or None,
                "in_shape": parse_shape(shape_text),
                "mean": parse_floats(mean_text, "mean"),
                "std": parse_floats(std_text, "std"),
                "classes": names,
                "dataset": dataset.spec if dataset is not None else None,
            }
            imported = import_upload(upload, name.strip(), **options)
        except KdvizError as err:
            st.error(str(err), icon=":material/error:")
            return
        st.session_state.pop(_PENDING_MODEL, None)
        _use_imported(imported, dataset)
