"""Bounded readers of the files a user points kdviz at: IDX files (plain or gzip), folder walks, images.

Every size is checked before anything that large is allocated or read: a file that declares a
huge shape, a small .gz that unpacks to gigabytes, a decompression-bomb PNG, or a folder such as
`/` raise a KdvizError that names the limit. The limits are module constants (tests lower them).
"""

from __future__ import annotations

import gzip
import os
import stat as stat_mod
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdviz.errors import KdvizError

MAX_DATA_BYTES = 2 * 1024**3  # an IDX file's data, or a folder's decoded images: 2 GiB in memory
MAX_IMAGE_PIXELS = 40_000_000  # one image (width x height), e.g. 7,000 x 5,700; PIL warns at 89 M
MAX_FOLDER_FILES = 200_000  # files looked at in one folder: data sets, not whole disks
MAX_IMAGES = 10_000_000  # images in one IDX file (EMNIST's largest has 814,255)
MAX_CLASSES = 10_000  # class sub-folders, or the largest IDX label + 1 (ImageNet has 1,000)
MAX_FOLDER_DEPTH = 16  # levels of sub-folders below the dataset folder

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif",
                    ".tiff", ".webp")  # fmt: skip
_GRAY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.0f} MiB"


# --------------------------------------------------------------------------------------------
# IDX


def read_idx(file: str | Path) -> np.ndarray:
    """Parse one IDX file (plain or .gz): magic 0x0000TTDD (T: type, D: dims), big-endian uint32 dims, data.

    Reads the header first and then exactly the bytes it declares (never more than
    MAX_DATA_BYTES), so a lying header or a gzip bomb cannot make it allocate or unpack more.
    """
    file = Path(file)
    try:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as f:
            array = _read_idx_stream(f, file)
    except (OSError, EOFError, zlib.error) as err:
        raise KdvizError(f"Could not read {file} ({err}); replace it with an intact copy.") from err
    return array


def _read_idx_stream(f, file: Path) -> np.ndarray:
    magic = f.read(4)
    if len(magic) == 0:
        raise KdvizError(f"{file} is empty; replace it with an MNIST-format IDX file.")
    if (
        len(magic) < 4
        or magic[0] != 0
        or magic[1] != 0
        or magic[2] not in _IDX_TYPES
        or magic[3] == 0
    ):
        raise KdvizError(
            f"{file} is not an IDX file (bad magic number); replace it with an MNIST-format file."
        )
    ndim = magic[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise KdvizError(f"{file} is truncated inside its header; replace it with an intact copy.")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(_IDX_TYPES[magic[2]])
    nbytes = dtype.itemsize
    for d in dims:  # Python ints: a product of 255 dims of 2^32 cannot overflow here
        nbytes *= d
    if nbytes > MAX_DATA_BYTES:
        raise KdvizError(
            f"{file} declares shape {dims} ({nbytes:,} bytes), over kdviz's limit of "
            f"{_mib(MAX_DATA_BYTES)} for one IDX file; use a smaller file or a folder: dataset."
        )
    raw = _read_exactly(f, nbytes)
    if len(raw) < nbytes:
        raise KdvizError(
            f"{file} is truncated ({len(raw):,} of {nbytes:,} data bytes for shape {dims}); "
            "replace it with an intact copy."
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(dims)
    # native byte order; no copy for bytes (the bytearray is already writable and ours)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_exactly(f, nbytes: int, chunk: int = 16 * 1024**2) -> bytearray:
    """Up to nbytes from f, in chunks: a gzip stream is never asked to unpack more than that."""
    out = bytearray()
    while len(out) < nbytes:
        piece = f.read(min(chunk, nbytes - len(out)))
        if not piece:
            break
        out += piece
    return out


# --------------------------------------------------------------------------------------------
# Folder walks


class _Walk:
    """Counts the files one folder walk has looked at, against MAX_FOLDER_FILES."""

    def __init__(self, spec: str) -> None:
        self.spec, self.files = spec, 0

    def count(self) -> None:
        self.files += 1
        if self.files > MAX_FOLDER_FILES:
            raise KdvizError(
                f"{self.spec} holds more than {MAX_FOLDER_FILES:,} files (kdviz's limit for one "
                "dataset folder); point it at a folder that holds only the dataset."
            )


def walk_files(
    root: Path, spec: str, *, recursive: bool = True, walk: _Walk | None = None
) -> Iterator[tuple[Path, os.stat_result]]:
    """(path, stat) of every visible regular file under root, sorted, following symlinks.

    Dangling symlinks and special files are skipped; a symlink loop is entered once; more than
    MAX_FOLDER_FILES files or MAX_FOLDER_DEPTH levels raise a KdvizError naming the limit.
    """
    walk = walk or _Walk(spec)
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path, depth: int) -> Iterator[tuple[Path, os.stat_result]]:
        try:
            key = os.stat(folder)
        except OSError:
            return
        if (key.st_dev, key.st_ino) in seen:  # a symlink loop or a second link to one folder
            return
        seen.add((key.st_dev, key.st_ino))
        if depth > MAX_FOLDER_DEPTH:
            raise KdvizError(
                f"{spec} nests folders more than {MAX_FOLDER_DEPTH} levels deep at {folder}; "
                "point it at a folder that holds only the dataset."
            )
        files, dirs = [], []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    walk.count()
                    try:
                        st = entry.stat()  # follows symlinks
                    except OSError:
                        continue  # a dangling symlink (or a file gone meanwhile): nothing to read
                    if stat_mod.S_ISDIR(st.st_mode):
                        dirs.append(entry.name)
                    elif stat_mod.S_ISREG(st.st_mode):
                        files.append((entry.name, st))
        except PermissionError as err:
            raise KdvizError(f"{spec}: {folder} cannot be read ({err.strerror}).") from err
        except OSError:
            return
        for name, st in sorted(files, key=lambda item: item[0]):
            yield folder / name, st
        if recursive:
            for name in sorted(dirs):
                yield from visit(folder / name, depth + 1)

    yield from visit(root, 0)


def class_dirs(root: Path, spec: str) -> list[Path]:
    """The visible sub-folders of root (at most MAX_CLASSES), sorted."""
    found, looked = [], 0
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                looked += 1
                if looked > MAX_FOLDER_FILES:
                    raise KdvizError(
                        f"{spec} holds more than {MAX_FOLDER_FILES:,} entries (kdviz's limit for one "
                        "dataset folder); point it at a folder that holds only the dataset."
                    )
                if entry.name.startswith(".") or not _is_dir(entry):
                    continue
                found.append(Path(entry.path))
                if len(found) > MAX_CLASSES:
                    raise KdvizError(
                        f"{spec} has more than {MAX_CLASSES:,} class sub-folders (kdviz's limit); "
                        "point it at a folder with one sub-folder per class."
                    )
    except PermissionError as err:
        raise KdvizError(f"{spec}: {root} cannot be read ({err.strerror}).") from err
    return sorted(found)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; a dangling one is not a folder
    except OSError:
        return False


def image_files(folder: Path, spec: str, walk: _Walk) -> list[Path]:
    """Image files anywhere under folder (sorted, hidden ones and dangling symlinks skipped)."""
    return [
        path
        for path, _ in walk_files(folder, spec, walk=walk)
        if path.name.lower().endswith(IMAGE_EXTENSIONS)
    ]


# --------------------------------------------------------------------------------------------
# Images


def decode_images(files: list[Path]) -> tuple[list[np.ndarray], list[bool], tuple[int, int]]:
    """Each file as an (H, W) gray or (H, W, 3) RGB uint8 array, resized to the first one's (W, H).

    An image over MAX_IMAGE_PIXELS, or all of them together over MAX_DATA_BYTES once resized,
    is refused before its pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    arrays, gray = [], []
    size: tuple[int, int] | None = None
    for file in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as img:  # reads the header only
                    _check_pixels(file, img.size)
                    if size is not None:
                        _check_total(
                            len(files), size, rgb=not all(gray) or img.mode not in _GRAY_MODES
                        )
                    img.load()
                    is_gray = img.mode in _GRAY_MODES
                    if img.mode.startswith("I;16"):  # 16-bit gray: scale to 8 bits, not clip
                        img = Image.fromarray(
                            (np.asarray(img, dtype=np.float64) / 257.0).round().astype(np.uint8)
                        )
                    img = img.convert("L" if is_gray else "RGB")
                    if size is None:
                        size = img.size
                        _check_total(len(files), size, rgb=not is_gray)
                    elif img.size != size:
                        img = img.resize(size, Image.Resampling.BILINEAR)
                    arrays.append(np.asarray(img, dtype=np.uint8))
                    gray.append(is_gray)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise KdvizError(
                f"The image {file} is too large to decode safely ({err}); "
                f"kdviz reads images of at most {MAX_IMAGE_PIXELS:,} pixels."
            ) from err
        except KdvizError:
            raise
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise KdvizError(f"Could not read the image {file} ({err}); fix or remove it.") from err
        except Exception as err:  # a malformed file can trip any of PIL's decoders
            raise KdvizError(
                f"Could not read the image {file} ({type(err).__name__}: {err}); fix or remove it."
            ) from err
    assert size is not None  # callers pass at least one file
    return arrays, gray, size


def _check_pixels(file: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise KdvizError(
            f"The image {file} is {width} x {height} pixels, over kdviz's limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels per image; shrink it or remove it."
        )


def _check_total(count: int, size: tuple[int, int], rgb: bool) -> None:
    width, height = size
    nbytes = count * width * height * (3 if rgb else 1)
    if nbytes > MAX_DATA_BYTES:
        raise KdvizError(
            f"{count:,} images of {width} x {height} pixels need {_mib(nbytes)}, over kdviz's "
            f"limit of {_mib(MAX_DATA_BYTES)} for one dataset; use fewer or smaller images."
        )


def stack_images(arrays: list[np.ndarray], rgb: bool, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) uint8; gray images become 3 equal channels when any image is in colour."""
    width, height = size
    out = np.empty((len(arrays), 3 if rgb else 1, height, width), dtype=np.uint8)
    for i, array in enumerate(arrays):
        out[i] = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
    return out
