"""Read and decode images into RGB, reporting failures per row instead of raising.

An image reference is a local path (absolute, or relative to a base folder) or a URL
(fetched by :mod:`clipeval.data.fetch`). Whatever the source, the bytes go through
:func:`decode_image`, where the content decides the format (never the file extension), the
pixel count is checked from the header before any pixel is decoded, and truncated data is an
error rather than a silently grey image (this relies on Pillow's default
``ImageFile.LOAD_TRUNCATED_IMAGES = False``, which nothing in the project changes). Every decoded image
then goes through
:func:`to_rgb`, the single documented conversion to RGB.

Reading is split in two so that an embedding cache can skip the expensive half:
:func:`read_image_bytes` gets a file's bytes and their SHA-256 (the image's content key), and
:func:`decode_image` turns bytes into pixels. With ``min_side``, a JPEG is decoded at a reduced
scale (libjpeg's DCT scaling, Pillow's ``draft``) while its short side stays at least
``min_side``: several times faster for photos much larger than a model's input, with the
deviation measured in ``bench/bench_pipeline.py`` (see docs/speed.md).

Images come from the web and may be hostile, so every image in the project is opened by
:func:`open_image`, which tries only the formats of :data:`IMAGE_FORMATS` (those the project
reads: JPEG, PNG, GIF, WebP, BMP, TIFF, AVIF, PPM, TGA, ICO, JPEG 2000, QOI). Any other
format is refused before its parser runs, whatever the file is named: EPS/PostScript (which
Pillow would render by running Ghostscript), PSD, PCX, SGI, DDS... get ``format_refused``.

:data:`STATUSES` lists every per-row status a run can report, with its meaning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipeval.data.fetch import FetchOptions, fetch_url, is_url, save_to_cache
from clipeval.data.options import MAX_PIXELS

# The only formats opened, by the name of Pillow's reader: those whose extensions the folder source and shards take
# (clipeval.data.sources.IMAGE_EXTENSIONS). JPEG also reads MPO (phones' multi-picture JPEGs), PNG reads APNG, PPM
# reads PBM/PGM/PNM. Never EPS (Pillow runs Ghostscript on it), nor any format Pillow adds later.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "AVIF", "PPM", "TGA", "ICO",
                                  "JPEG2000", "QOI")

STATUSES: dict[str, str] = {
    "ok": "the image was read and the caption is usable",
    "bad_reference": "the image cell is empty or not text",
    "missing": "no file at the image path (relative paths are resolved against the source's base folder)",
    "read_error": "the file exists but cannot be read (permissions, a folder, an I/O error)",
    "empty_file": "the file or download is empty (0 bytes)",
    "truncated": "the image data ends early (an incomplete file or download)",
    "decode_error": "the content is not an image Pillow can decode (e.g. text or HTML named .jpg)",
    "format_refused": "the content is an image format outside the allow-list (EPS, PSD, PCX...: "
                      "clipeval.data.images.IMAGE_FORMATS); refused before any parsing, whatever the file's name",
    "too_many_pixels": "width x height exceeds the pixel cap (decompression-bomb guard); checked from the header",
    "bad_scheme": "the URL is not http/https (file:, ftp:, data:...) or redirects to one; never fetched",
    "bad_url": "the URL is malformed (no host, invalid characters)",
    "private_address": "the URL's host resolves to a loopback, private, link-local or reserved address; refused "
                       "(--allow-private-urls opts in)",
    "http_<code>": "the server answered with this HTTP error, e.g. http_404, http_403, http_503 after retries",
    "timeout": "no complete response within the per-request timeout, after retries",
    "connection_error": "the connection failed (DNS, refused, reset after retries, TLS)",
    "too_large": "the download or local file exceeds the byte cap (--max-download-mb); abandoned mid-stream",
    "outside_root": "a local image path from the data leaves the table's folder, --image-root and the image cache "
                    "(a symlink counts where it points); not read (--allow-any-path opts out)",
    "not_a_file": "the local image path is a device, FIFO or socket, not a regular file; not read",
    "member_too_large": "a shard's tar member (or parquet image cell) exceeds the member byte cap "
                        "(--max-member-mb); refused from the tar header, never read",
    "too_many_captions": "a shard's sample lists more captions than the cap (--max-captions); kept as one row, "
                         "not scored",
    "duplicate_uid": "an earlier row of the same shard has this uid (the reason names it); this row keeps its "
                     "place, gets the uid <uid>#<row> and is not scored",
    "preprocess_error": "the model's image transform rejected the decoded image (set during scoring)",
    "empty_caption": "the caption is missing, NaN, empty or only whitespace/invisible characters",
    "bad_caption": "the caption cell is not text (e.g. a number or a list)",
}

_TO_8_BIT = {
    # 16-bit integer greyscale: 0..65535 maps linearly onto 0..255.
    **{mode: lambda pixels: pixels.astype(np.float32) / 257.0 for mode in ("I;16", "I;16L", "I;16B", "I;16N")},
    # 32-bit integer greyscale: taken to hold 16-bit data (as 16-bit PNG/TIFF do); clipped.
    "I": lambda pixels: np.clip(pixels, 0, 65535).astype(np.float32) / 257.0,
    # 32-bit float greyscale: taken to be in [0, 1] (the float-image convention); clipped.
    "F": lambda pixels: np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0,
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")


@dataclass(frozen=True)
class LoadedImage:
    """The outcome of reading one image.

    Attributes:
        image: the RGB image, or ``None`` when reading failed.
        status: ``ok`` or a failure code from :data:`STATUSES`.
        error: a human-readable reason; empty when ``status == "ok"``.
        format: the format Pillow read (``JPEG``, ``PNG``...: one of :data:`IMAGE_FORMATS`, or
            ``MPO``); empty when reading failed.
    """

    image: Image.Image | None
    status: str
    error: str = ""
    format: str = ""


@dataclass(frozen=True)
class RawImage:
    """An image file's bytes, before decoding.

    Attributes:
        data: the file content, or ``None`` when it could not be read.
        status: ``ok`` or a failure code from :data:`STATUSES`.
        error: a human-readable reason; empty when ``status == "ok"``.
        digest: SHA-256 of ``data`` (hex), the image's content key; empty when not read.
    """

    data: bytes | None
    status: str
    error: str = ""
    digest: str = ""


@dataclass(frozen=True)
class FailedCell:
    """An image cell that a reader has already refused (a shard member over the byte cap, a duplicate uid).

    :func:`read_image_bytes` reports its status and reason without reading anything, so the
    row keeps its place through scoring. ``str()`` gives the original reference (empty for bytes).

    Attributes:
        ref: the cell's original content: a path/URL string, the image bytes, or None.
        status: a failure code from :data:`STATUSES`.
        error: a human-readable reason.
    """

    ref: str | bytes | None = field(repr=False)
    status: str
    error: str

    def __str__(self) -> str:
        return self.ref if isinstance(self.ref, str) else ""


class FormatRefusedError(UnidentifiedImageError):
    """The content is an image in a format outside the allow-list; no parser of that format ran."""


def open_image(source: str | os.PathLike | io.IOBase, formats: Iterable[str] = IMAGE_FORMATS) -> Image.Image:
    """Open an image (its header; pixels load lazily) trying only the allowed formats: the one way images are opened.

    Args:
        source: a path or a binary file object (read from its start).
        formats: the Pillow format names tried (default :data:`IMAGE_FORMATS`).

    Returns:
        The opened PIL image; use it as a context manager.

    Raises:
        FormatRefusedError: the content starts like a known format that is not in ``formats``;
            the message says ``format X is not accepted``.
        PIL.UnidentifiedImageError: no format recognises the content.
        PIL.Image.DecompressionBombError: over twice Pillow's pixel limit (its own guard).
        OSError: the file cannot be read.
    """
    formats = tuple(name.upper() for name in formats)
    Image.init()  # every plugin registered, so that the allowed names are known and a refused one can be named
    try:
        return Image.open(source, formats=[name for name in formats if name in Image.OPEN])
    except UnidentifiedImageError as error:
        refused = _refused_format(source, formats)
        if refused:
            raise FormatRefusedError(f"format {refused} is not accepted (accepted: {', '.join(formats)})") from error
        raise


def failure_status(error: BaseException) -> tuple[str, str]:
    """The row status and reason of an exception from :func:`open_image` or decoding (see :data:`STATUSES`)."""
    if isinstance(error, Image.DecompressionBombError):  # PIL's own guard fires at open, above 2x its limit
        return "too_many_pixels", str(error)
    if isinstance(error, FormatRefusedError):
        return "format_refused", str(error)
    if isinstance(error, UnidentifiedImageError):
        return "decode_error", "not a recognised image format"
    if isinstance(error, FileNotFoundError):
        return "missing", f"no such file: {error.filename}"
    if isinstance(error, (PermissionError, IsADirectoryError, NotADirectoryError)):
        return "read_error", f"{type(error).__name__}: {error}"
    message = f"{type(error).__name__}: {error}"
    return ("truncated" if "truncated" in message.lower() else "decode_error"), message


def _refused_format(source, allowed: tuple[str, ...]) -> str | None:
    """The format whose signature ``source``'s first 16 bytes carry, when no allowed format claims them.

    Only the plugins' signature checks run (what Pillow itself runs on these 16 bytes), never a parser.
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                prefix = handle.read(16)
        else:
            source.seek(0)
            prefix = source.read(16)
    except (OSError, ValueError, AttributeError):
        return None
    claimed = []
    for name, (_, accept) in Image.OPEN.items():
        with contextlib.suppress(Exception):
            if accept is not None and accept(prefix):
                claimed.append(name)
    if not claimed or any(name in allowed for name in claimed):
        return None
    return claimed[0]


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB the one documented way.

    In order: the first frame of an animation; EXIF orientation applied; high-bit-depth
    greyscale brought to 8 bits (``I;16*``: value/257; ``I``: clipped to 0..65535, then
    value/257; ``F``: clipped to [0, 1], then x255); any transparency (alpha channel, palette
    or colour-key ``transparency``) composited on opaque white; every other mode (``1``, ``L``,
    ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``...) through Pillow's own conversion. ICC
    profiles are not applied.

    Args:
        image: any PIL image (it is not modified).

    Returns:
        A new RGB image of the (oriented) size.
    """
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in _TO_8_BIT:
        pixels = _TO_8_BIT[image.mode](np.asarray(image))
        image = Image.fromarray(np.rint(pixels).astype(np.uint8), mode="L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> LoadedImage:
    """Decode image bytes (content decides the format, not a file extension).

    Args:
        data: the raw file content.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        min_side: if given, decode a JPEG at the smallest of 1/2, 1/4 or 1/8 scale whose
            short side is still at least ``min_side`` (other formats decode at full size).

    Returns:
        A :class:`LoadedImage`; ``status`` is ``ok``, ``empty_file``, ``too_many_pixels``,
        ``format_refused`` (not in :data:`IMAGE_FORMATS`), ``truncated`` or ``decode_error``.
    """
    if not data:
        return _empty()
    return _decode(io.BytesIO(data), max_pixels, min_side)


def read_image_bytes(ref: str | bytes, base_dir: Path | None = None, max_pixels: int = MAX_PIXELS,
                     fetch_options: FetchOptions = FetchOptions()) -> RawImage:
    """Read one image's bytes from a local path or an http(s) URL, with their SHA-256.

    Args:
        ref: a path (absolute, or relative to ``base_dir``), a URL, the image's bytes
            themselves (a shard that stores images inline), or a :class:`FailedCell` (its
            status is returned; nothing is read).
        base_dir: the folder relative paths are resolved against: the table's or shard's own, which
            a local path from the data may not leave; ``None`` for a path the user gave.
        max_pixels: the pixel cap used to check a downloaded body before it is cached.
        fetch_options: timeout, retries, size cap and cache for URLs.

    Returns:
        A :class:`RawImage`: ``bad_reference`` for an empty cell, ``missing`` / ``read_error``
        / ``empty_file`` / ``not_a_file`` / ``too_large`` for local files (``outside_root`` for a
        path from the data, given with ``base_dir``, that leaves it, ``fetch_options.image_root``
        and the image cache, unless ``fetch_options.allow_any_path``), the codes of
        :func:`clipeval.data.fetch.fetch_url` for URLs, and (for a new download, which is
        decoded once before it is cached) :func:`decode_image`'s codes.
    """
    if isinstance(ref, FailedCell):
        return RawImage(None, ref.status, ref.error)
    if isinstance(ref, os.PathLike):
        ref = os.fspath(ref)
    if isinstance(ref, bytes):
        return _raw(ref)
    if not isinstance(ref, str) or not ref.strip():
        return RawImage(None, "bad_reference", f"no image reference in this row ({ref!r})")
    if is_url(ref.strip()):
        return _read_url(ref.strip(), max_pixels, fetch_options)
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if base_dir is not None and not fetch_options.allow_any_path:
        roots = _roots(Path(base_dir), fetch_options.image_root, fetch_options.image_cache_dir)
        if not any(path.resolve().is_relative_to(root) for root in roots):  # resolve: a symlink counts where it points
            return RawImage(None, "outside_root", f"{path} is outside the table's folder {roots[0]} (and --image-root "
                                                  "and the image cache); pass --image-root FOLDER or --allow-any-path")
    return _read_local(path, fetch_options.max_bytes)


def read_many_bytes(refs: list[str], base_dir: Path | None = None, max_pixels: int = MAX_PIXELS,
                    fetch_options: FetchOptions = FetchOptions()) -> list[RawImage]:
    """:func:`read_image_bytes` for many references on a pool of ``fetch_options.read_threads``; each read once."""
    return _each_distinct(refs, lambda ref: read_image_bytes(ref, base_dir, max_pixels, fetch_options),
                          fetch_options.read_threads)


def header_size(data: bytes | None) -> tuple[int, int] | None:
    """``(width, height)`` read from an image's header (nothing decoded); ``None`` when unreadable.

    The stored size, before any EXIF rotation (which swaps width and height but changes neither
    the short side nor the aspect ratio).
    """
    if not data:
        return None
    try:
        with open_image(io.BytesIO(data)) as opened:
            return opened.size
    except Exception:  # noqa: BLE001 - any unreadable header simply has no size
        return None


def read_image(ref: str, base_dir: Path | None = None, max_pixels: int = MAX_PIXELS,
               fetch_options: FetchOptions = FetchOptions()) -> LoadedImage:
    """Read and decode one image from a local path or an http(s) URL.

    Args:
        ref: a path (absolute, or relative to ``base_dir``) or a URL.
        base_dir: the folder relative paths are resolved against.
        max_pixels: the pixel cap passed to :func:`decode_image`.
        fetch_options: timeout, retries, size cap and cache for URLs.

    Returns:
        A :class:`LoadedImage` with the codes of :func:`read_image_bytes` and :func:`decode_image`.
    """
    raw = read_image_bytes(ref, base_dir, max_pixels, fetch_options)
    if raw.status != "ok":
        return LoadedImage(None, raw.status, raw.error)
    return decode_image(raw.data, max_pixels)


def read_images(refs: list[str], base_dir: Path | None = None, max_pixels: int = MAX_PIXELS,
                fetch_options: FetchOptions = FetchOptions()) -> list[LoadedImage]:
    """Read many images (local paths and URLs mixed) on a bounded thread pool.

    Each distinct reference is read once, so repeated images (several captions per image)
    cost one read or one download.

    Args:
        refs: image references, one per row.
        base_dir: the folder relative paths are resolved against.
        max_pixels: the pixel cap passed to :func:`decode_image`.
        fetch_options: timeout, retries, size cap and cache for URLs, and the reads in flight at once
            (``read_threads``).

    Returns:
        One :class:`LoadedImage` per reference, in input order.
    """
    return _each_distinct(refs, lambda ref: read_image(ref, base_dir, max_pixels, fetch_options),
                          fetch_options.read_threads)


def _each_distinct(refs: list[str], read, threads: int) -> list:
    keys = [ref if isinstance(ref, (str, bytes, os.PathLike, FailedCell)) else None for ref in refs]
    unique = list(dict.fromkeys(keys))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        loaded = dict(zip(unique, pool.map(read, unique)))
    return [loaded[key] for key in keys]


@functools.lru_cache(maxsize=64)
def _roots(base_dir: Path, image_root: Path | None, cache_dir: Path | None) -> tuple[Path, ...]:
    """The folders a local image path from the data may lie under: the table's, ``--image-root``, the image cache
    (where images stored inside datasets are written)."""
    return tuple(Path(folder).expanduser().resolve() for folder in (base_dir, image_root, cache_dir) if folder)


def _read_local(path: Path, cap: int) -> RawImage:
    """A local file's bytes if it is a regular file (a device or FIFO is never read: opened without blocking)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return RawImage(None, "missing", f"no such file: {path}")
    except OSError as error:
        return RawImage(None, "read_error", f"{type(error).__name__}: {error}")
    status = os.fstat(descriptor)
    mode = status.st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            return RawImage(None, "read_error", f"IsADirectoryError: {path} is a folder")
        return RawImage(None, "not_a_file", f"{path} is a {_file_kind(mode)}, not a regular file; not read")
    with os.fdopen(descriptor, "rb") as handle:
        try:  # read(n) allocates n bytes up front: ask for the file's size (a file still growing: one byte more)
            data = handle.read(min(status.st_size, cap) + 1)
        except OSError as error:
            return RawImage(None, "read_error", f"{type(error).__name__}: {error}")
    if len(data) > cap:
        return RawImage(None, "too_large", f"{path} is larger than the {cap:,}-byte cap (--max-download-mb); not read")
    return _raw(data)


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISCHR: "character device", stat.S_ISBLK: "block device", stat.S_ISFIFO: "FIFO (named pipe)",
             stat.S_ISSOCK: "socket"}
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def _raw(data: bytes) -> RawImage:
    if not data:
        return RawImage(None, "empty_file", "the file is empty (0 bytes)")
    return RawImage(data, "ok", digest=hashlib.sha256(data).hexdigest())


def _read_url(url: str, max_pixels: int, options: FetchOptions) -> RawImage:
    """Fetch a URL; a new body is stored in the cache only if it decodes."""
    fetched = fetch_url(url, options)
    if fetched.status != "ok":
        return RawImage(None, fetched.status, fetched.error)
    if not fetched.from_cache and options.image_cache_dir is not None and fetched.data:
        checked = decode_image(fetched.data, max_pixels)
        if checked.status != "ok":
            return RawImage(None, checked.status, checked.error)
        # the cache is an optimisation: a read-only or full disk costs a re-download only
        with contextlib.suppress(OSError):
            save_to_cache(url, fetched.data, options.image_cache_dir)
    return _raw(fetched.data)


def _decode(handle: io.BytesIO, max_pixels: int, min_side: int | None = None) -> LoadedImage:
    """Open (header only, allowed formats only), check the pixel count, then decode the first frame."""
    try:
        with open_image(handle) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                return LoadedImage(None, "too_many_pixels",
                                   f"{width}x{height} exceeds the {max_pixels:,}-pixel cap")
            if min_side and opened.format == "JPEG" and min(width, height) >= 2 * min_side:
                scale = min_side / min(width, height)
                opened.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
            opened.load()
            return LoadedImage(to_rgb(opened), "ok", format=opened.format or "")
    except Exception as error:  # noqa: BLE001 - a corrupt file may raise anything; one row must not stop a run
        return LoadedImage(None, *failure_status(error))


def _empty() -> LoadedImage:
    return LoadedImage(None, "empty_file", "the file is empty (0 bytes)")
