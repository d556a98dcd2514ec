"""One image file to one stored image: decode (with its guards), colour score, LANCZOS resize.

:func:`load_resized` decodes a file (:func:`decode_rgb`: only the formats its extension names,
refusing pixel bombs, too many JPEG scans and decodes that would need more memory than
:func:`decode_budget`), scores its colour (:func:`color_score`) and resizes it
(:func:`resize_lanczos`); it never raises for a bad file, it returns a :class:`Record` saying
why. Pillow and NumPy only: reading the bytes (fsspec) is the pipeline's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import posixpath
import sys
import warnings
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: The Pillow formats each image extension allows: a file is opened with these only
#: (``Image.open(formats=...)``), so Pillow never hands it to another decoder (PostScript to
#: Ghostscript, say). The JPEG decoder also opens multi-picture JPEGs (reported as MPO), the
#: PNG decoder animated PNGs; DIB is a BMP without its file header.
EXTENSION_FORMATS: dict[str, tuple[str, ...]] = {
    ".jpg": ("JPEG",),
    ".jpeg": ("JPEG",),
    ".png": ("PNG",),
    ".webp": ("WEBP",),
    ".bmp": ("BMP", "DIB"),
    ".tif": ("TIFF",),
    ".tiff": ("TIFF",),
    ".gif": ("GIF",),
}


IMAGE_EXTENSIONS = frozenset(EXTENSION_FORMATS)


#: Every format some extension allows: for a file whose name says nothing.
ALLOWED_FORMATS = tuple(dict.fromkeys(f for fs in EXTENSION_FORMATS.values() for f in fs))


#: Images declaring more pixels than this are rejected unread: Pillow's own bomb limit.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


#: JPEGs with more scans than this are rejected undecoded: each scan of a progressive JPEG is
#: a pass over the whole image, so repeated scans make a small file take minutes (500 is the
#: limit libjpeg-turbo suggests for its tools and uses in its fuzzers).
MAX_JPEG_SCANS = 500


#: Memory one decode may need at most (see :func:`decode_bytes`): a module constant, lowered
#: to :data:`DECODE_MEMORY_FRACTION` of a Dask worker's memory limit per thread when that is
#: smaller (:func:`decode_budget`).
MAX_DECODE_BYTES = 1 << 30


DECODE_MEMORY_FRACTION = 0.5


#: Bytes a pixel that a decoder needs on top of the image (libwebp's output buffer and its
#: copy, measured: 20.9 bytes a pixel in all for lossless RGB WebP, 11.4 for PNG and JPEG).
_DECODER_BYTES_PER_PIXEL = {"WEBP": 10}


#: Bytes a pixel of the RGB image (Pillow keeps RGB in 4 bytes) and of its NumPy copy.
_RGB_BYTES_PER_PIXEL = 4 + 3


@dataclass(frozen=True)
class Record:
    """What ingest learned about one source file."""

    source: str
    accepted: bool
    reason: str = ""
    color_score: float = math.nan
    width: int = 0
    height: int = 0


def escaped_name(source: str) -> str:
    r"""``source`` as valid UTF-8 text, storable in Zarr and JSON: what ingest records for it.

    A file name that is not valid UTF-8 comes out of a listing (:func:`os.fsdecode`) with lone
    surrogates in place of its undecodable bytes; each such byte is written ``\xNN`` instead.
    Valid names are returned unchanged.

    Examples
    --------
    >>> import os
    >>> print(escaped_name(os.fsdecode(b"bad\xff\xfe.png")))
    bad\xff\xfe.png
    >>> escaped_name("café.png")
    'café.png'
    """
    if not _has_surrogates(source):
        return source
    return source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_failure(source: str) -> str | None:
    """The reason to reject a listed name that is not valid UTF-8, or None for a valid one."""
    if not _has_surrogates(source):
        return None
    return f"file name is not valid UTF-8: stored escaped as '{escaped_name(source)}'"


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class TooManyPixelsError(ValueError):
    """An image declares more pixels than the limit (a decompression bomb, perhaps)."""


class DecodeRefusedError(ValueError):
    """An image that is not decoded, for the reason its message gives (recorded as it is)."""


def image_extension(name: str) -> str:
    """The extension of a file name, lower case: from its last dot, unless that starts the name.

    Unlike ``posixpath.splitext``, dots that begin a name count only up to the last one:
    ``..png`` is a PNG (``splitext`` gives it no extension), ``.png`` a hidden file without one.

    Examples
    --------
    >>> image_extension("a/b.JPG"), image_extension("..png"), image_extension(".png")
    ('.jpg', '.png', '')
    """
    base = posixpath.basename(name)
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def formats_for(name: str | None) -> tuple[str, ...]:
    """The Pillow formats a file of this name may be opened as (:data:`EXTENSION_FORMATS`)."""
    return EXTENSION_FORMATS.get(image_extension(name or ""), ALLOWED_FORMATS)


def decode_rgb(
    fp: str | IO[bytes],
    max_pixels: int = MAX_PIXELS,
    *,
    name: str | None = None,
    max_bytes: int = MAX_DECODE_BYTES,
    max_scans: int = MAX_JPEG_SCANS,
) -> Image.Image:
    """Decode the first frame of an image file, apply its EXIF orientation, convert to RGB.

    Palette, RGBA (alpha dropped), CMYK, 16-bit and other modes become RGB exactly as Pillow's
    ``convert("RGB")`` makes them. Only the formats that the extension of ``name`` allows
    (:func:`formats_for`) are tried, and every limit is checked before any pixel is decoded.

    Parameters
    ----------
    fp : str or binary file
        The file, seekable.
    max_pixels : int
        Most pixels the first frame may declare.
    name : str, optional
        The file's name, for its extension; by default ``fp`` when it is a path. Without one,
        every format of :data:`ALLOWED_FORMATS` is tried.
    max_bytes : int
        Most memory the decode may need (:func:`decode_bytes`).
    max_scans : int
        Most scans a JPEG may have (:func:`jpeg_scan_count`).

    Raises
    ------
    TooManyPixelsError
        When the header declares more than ``max_pixels`` pixels; nothing is decoded.
    DecodeRefusedError
        When the file is not of a format its extension allows, when it is a JPEG of more than
        ``max_scans`` scans or would need more than ``max_bytes`` to decode; nothing decoded.
    """
    if name is None and isinstance(fp, str):
        name = fp
    formats = formats_for(name)
    with contextlib.ExitStack() as stack:
        if isinstance(fp, str):
            fp = stack.enter_context(open(fp, "rb"))
        fp = _check_jpeg_scans(fp, formats, max_scans)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb, palette and EXIF notices: decided below
            img = stack.enter_context(_open_as(fp, formats, name))
            if img.width * img.height > max_pixels:
                raise TooManyPixelsError(
                    f"{img.width} x {img.height} pixels is more than max_pixels={max_pixels}"
                )
            img.seek(0)  # the frame whose size was checked (already the current one)
            _check_memory(decode_bytes(img), max_bytes)
            img.load()
            orientation = _orientation(img)
            if orientation in _TURNING_ORIENTATIONS:  # exif_transpose makes a copy
                _check_memory(decode_bytes(img, turned=True), max_bytes)
            if orientation is None or orientation in _TURNING_ORIENTATIONS:
                img = ImageOps.exif_transpose(img)
            # Without a turning orientation exif_transpose only copies, and convert("RGB") of
            # an RGB image too: the decoded image itself is returned then, pixel for pixel.
            return img if img.mode == "RGB" else img.convert("RGB")
    raise AssertionError("unreachable")  # for type checkers: the with block returns


_TURNING_ORIENTATIONS = range(2, 9)


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation (1: upright); None when the EXIF cannot be read.

    With unreadable EXIF, :func:`PIL.ImageOps.exif_transpose` is left to decide, as always.
    """
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return None


def _open_as(fp: IO[bytes], formats: tuple[str, ...], name: str | None) -> Image.Image:
    """``Image.open`` trying only ``formats``; a mismatch is a :class:`DecodeRefusedError`."""
    try:
        return Image.open(fp, formats=list(formats))
    except UnidentifiedImageError:
        if formats == ALLOWED_FORMATS:
            raise
    ext = image_extension(name or "")
    reason = f"cannot decode: not {_a(formats[0])} file (the extension says {ext})"
    fp.seek(0)
    try:  # which allowed format it is, if any: those plugins only parse the header
        with Image.open(fp, formats=list(ALLOWED_FORMATS)) as other:
            reason = reason[:-1] + f"; it is {_a(str(other.format))} file)"
    except Exception:  # anything else: not named
        pass
    raise DecodeRefusedError(reason)


def _a(format_name: str) -> str:
    return f"an {format_name}" if format_name[:1] in "AEIOU" else f"a {format_name}"


def _check_memory(need: int, limit: int) -> None:
    if need > limit:  # MB rounded up for the need, down for the limit
        raise DecodeRefusedError(
            f"cannot decode: would need {math.ceil(need / 1e6)} MB to decode, more than the "
            f"{math.floor(limit / 1e6)} MB limit"
        )


def decode_bytes(img: Image.Image, *, turned: bool = False) -> int:
    """Memory that decoding the current frame of ``img`` and converting it to RGB will need.

    Known before any pixel is decoded, from the frame's size, mode and format: the decoded
    frame (Pillow keeps 1 byte a pixel for 8-bit modes with one band, 2 for 16-bit, 4 for
    32-bit and for every mode with several bands, whatever their bit depth), the decoder's own
    buffers (WebP), the RGB image (4 bytes a pixel) and its NumPy copy (3); ``turned``: plus
    the copy that an EXIF orientation makes. Measured peaks are within 1.5 bytes a pixel.

    Examples
    --------
    >>> decode_bytes(Image.new("RGB", (1000, 1000)))
    11000000
    >>> decode_bytes(Image.new("I;16", (1000, 1000)), turned=True)
    11000000
    """
    native = _bytes_per_pixel(img.mode)
    per_pixel = native * (2 if turned else 1) + _RGB_BYTES_PER_PIXEL
    per_pixel += _DECODER_BYTES_PER_PIXEL.get(str(img.format), 0)
    return img.width * img.height * per_pixel


def _bytes_per_pixel(mode: str) -> int:
    from PIL import ImageMode

    try:
        info = ImageMode.getmode(mode)
    except KeyError:
        return 4
    if len(info.bands) > 1:
        return 4
    return max(1, np.dtype(info.typestr).itemsize)


def decode_budget() -> int:
    """Memory a decode may need: :data:`MAX_DECODE_BYTES`, or less on a small Dask worker.

    In a Dask worker with a memory limit, at most :data:`DECODE_MEMORY_FRACTION` of that limit
    divided among its threads (which decode at the same time): a decode that would need more
    is rejected rather than getting its worker killed.
    """
    distributed = sys.modules.get("distributed")  # asked, never imported: kernels need no Dask
    if distributed is None:  # not on a distributed worker
        return MAX_DECODE_BYTES
    try:
        worker = distributed.get_worker()
    except ValueError:
        return MAX_DECODE_BYTES
    limit = getattr(getattr(worker, "memory_manager", worker), "memory_limit", None)
    threads = max(1, int(getattr(getattr(worker, "state", worker), "nthreads", 1) or 1))
    if not limit:
        return MAX_DECODE_BYTES
    return min(MAX_DECODE_BYTES, int(DECODE_MEMORY_FRACTION * limit / threads))


_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: no length


def jpeg_scan_count(data: bytes) -> int:
    r"""The number of scans (SOS markers) of the first image of a JPEG file, read unencoded.

    The walk follows the markers' lengths, so bytes inside other segments (an EXIF thumbnail,
    ICC data) and the pictures that follow the first in an MPO file are not counted. A
    truncated file counts the scans it has.

    Examples
    --------
    >>> jpeg_scan_count(b"\xff\xd8" + 2 * b"\xff\xda\x00\x02\x11\xff\x00" + b"\xff\xd9")
    2
    """
    scans, pos, n = 0, 2, len(data)
    while pos + 1 < n:
        if data[pos] != 0xFF:  # entropy-coded data of a scan: find its end
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x00 or marker in _JPEG_STANDALONE:  # stuffed byte, restart marker
            pos += 2
        elif marker == 0xD9:  # end of the first image
            break
        else:
            if pos + 3 >= n:
                break
            scans += marker == 0xDA
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return scans


def _check_jpeg_scans(fp: IO[bytes], formats: tuple[str, ...], max_scans: int) -> IO[bytes]:
    """``fp``, or an in-memory copy of it once its scans are counted when it is a JPEG."""
    if "JPEG" not in formats:
        return fp
    start = fp.tell()
    head = fp.read(3)
    fp.seek(start)
    if head != b"\xff\xd8\xff":
        return fp
    data = fp.read()
    scans = jpeg_scan_count(data)
    if scans > max_scans:
        raise DecodeRefusedError(
            f"cannot decode: {scans} JPEG scans, more than {max_scans} (a decoding bomb?)"
        )
    return io.BytesIO(data)


def decode_failure(err: Exception) -> str:
    """The reason recorded for a file that Pillow could not decode."""
    if isinstance(err, TooManyPixelsError | Image.DecompressionBombError):
        return f"too many pixels: more than {MAX_PIXELS} (a decompression bomb?)"
    if isinstance(err, DecodeRefusedError):
        return str(err)
    if isinstance(err, UnidentifiedImageError):
        return "cannot decode: not a recognised image format"
    if isinstance(err, EOFError) or (isinstance(err, OSError) and "truncated" in str(err)):
        return "cannot decode: truncated image data"
    return f"cannot decode: {type(err).__name__}"


def read_failure(err: OSError) -> str:
    """The reason recorded for a file that could not be opened or read."""
    return f"cannot read: {_os_reason(err)}"


def _os_reason(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "not found (it vanished, or is a broken symbolic link)"
    return err.strerror or type(err).__name__


def color_score(rgb: np.ndarray | Image.Image) -> float:
    """Mean of the nine entries of the correlation matrix of the R, G and B values.

    The covariances are exact integers: per-channel sums and sums of squares come from the
    channel histograms, the cross sums from the histograms of the channel differences
    (``sum(r*g) = (sum(r**2) + sum(g**2) - sum((r - g)**2)) / 2``), all counted by Pillow in C
    (~3x faster than float64 BLAS on ``(n, 3)``; benchmarks/color_score.py). So the score
    does not depend on how the pixels are visited, and the float formula applied to those
    integers is the one used since the start: the same score, bit for bit. A constant channel
    makes the correlation undefined: the score is then NaN (never colour).

    Parameters
    ----------
    rgb : np.ndarray or PIL.Image.Image
        Shape ``(h, w, 3)``, uint8 (other dtypes are summed in float64, exact for integers
        whose sums stay below 2**53), or an RGB Pillow image.

    Raises
    ------
    ValueError
        When ``rgb`` is a Pillow image whose mode is not ``"RGB"``.

    Examples
    --------
    >>> gray = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2)
    >>> color_score(gray)
    1.0
    """
    if isinstance(rgb, Image.Image):
        if rgb.mode != "RGB":
            raise ValueError(f"rgb must be an RGB image, got an image of mode {rgb.mode!r}")
        n, sums, products = rgb.width * rgb.height, *_rgb_moments(rgb)
    elif rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
        n = rgb.shape[0] * rgb.shape[1]
        if n == 0:
            return math.nan
        sums, products = _rgb_moments(Image.fromarray(np.ascontiguousarray(rgb), "RGB"))
    else:
        n, sums, products = _float_moments(rgb)
    return _score_from_moments(n, sums, products)


_LEVELS = np.arange(256, dtype=np.int64)
_SQUARES = _LEVELS * _LEVELS
#: The channel pairs whose differences give the cross sums, as (i, j) with i < j.
_PAIRS = ((0, 1), (0, 2), (1, 2))


def _rgb_moments(img: Image.Image) -> tuple[list[int], list[list[int]]]:
    """Exact ``sum(c_i)`` and ``sum(c_i * c_j)`` of an RGB image, from histograms."""
    from PIL import ImageChops

    hist = np.asarray(img.histogram(), dtype=np.int64).reshape(3, 256)
    sums = [int(v) for v in hist @ _LEVELS]
    squares = [int(v) for v in hist @ _SQUARES]
    products = [[0] * 3 for _ in range(3)]
    for i in range(3):
        products[i][i] = squares[i]
    bands = img.split()
    for i, j in _PAIRS:
        diff = ImageChops.difference(bands[i], bands[j]).histogram()  # |c_i - c_j|, 0-255
        diff_squares = int(np.asarray(diff, dtype=np.int64) @ _SQUARES)
        products[i][j] = products[j][i] = (squares[i] + squares[j] - diff_squares) // 2
    return sums, products


def _float_moments(rgb: np.ndarray) -> tuple[int, list[int], list[list[int]]]:
    """``n``, ``sum(c_i)`` and ``sum(c_i * c_j)`` of any numeric ``(..., 3)`` array.

    Float64 sums over blocks, exact while every sum is an integer below 2**53.
    """
    pixels = rgb.reshape(-1, 3)
    n = len(pixels)
    sums = np.zeros(3)
    products = np.zeros((3, 3))
    step = 1 << 20
    for start in range(0, n, step):
        block = pixels[start : start + step].astype(np.float64)
        sums += np.ones(len(block)) @ block
        products += block.T @ block
    return n, [int(v) for v in sums], [[int(v) for v in row] for row in products]


def _score_from_moments(n: int, sums: list[int], products: list[list[int]]) -> float:
    """The mean of the correlation matrix from exact integer moments (NaN: undefined)."""
    s = sums
    cov = [[n * products[i][j] - s[i] * s[j] for j in range(3)] for i in range(3)]
    if any(cov[i][i] == 0 for i in range(3)):
        return math.nan
    corr = [
        [1.0 if i == j else cov[i][j] / math.sqrt(cov[i][i] * cov[j][j]) for j in range(3)]
        for i in range(3)
    ]
    return float(np.mean(corr))


def resize_lanczos(img: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size x size`` with Pillow LANCZOS; returns uint8 ``(size, size, 3)``."""
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def load_resized(
    fp: str | IO[bytes],
    source: str,
    size: int,
    threshold: float,
    *,
    max_bytes: int | None = None,
) -> tuple[np.ndarray | None, Record]:
    """Decode, colour-test and resize one file; never raises for a bad file.

    ``source`` is the file's name: its extension says which formats are tried
    (:func:`decode_rgb`). ``max_bytes``: the memory a decode may need, by default
    :func:`decode_budget`.

    Returns
    -------
    (np.ndarray or None, Record)
        The resized uint8 image when accepted, else None; and the record saying why.
    """
    budget = decode_budget() if max_bytes is None else max_bytes
    try:
        rgb = decode_rgb(fp, name=source, max_bytes=budget)
        width, height = rgb.size
        score = color_score(rgb)  # the Pillow image: no NumPy copy of the full-size pixels
    except Exception as err:  # any decoder failure is a rejection, not a crash
        return None, Record(source, False, decode_failure(err))
    if math.isnan(score):
        return None, Record(
            source, False, "not colour: a channel is constant", score, width, height
        )
    if score >= threshold:
        reason = f"not colour: score >= {threshold}"
        return None, Record(source, False, reason, score, width, height)
    return resize_lanczos(rgb, size), Record(source, True, "", score, width, height)


def pixel_digests(block: np.ndarray) -> list[str]:
    """A digest of each image of a ``(n, h, w, 3)`` uint8 block: equal for equal pixels.

    The first 128 bits of the SHA-256 of each image's bytes, in hexadecimal.
    """
    return [hashlib.sha256(memoryview(np.ascontiguousarray(im)).cast("B")).hexdigest()[:32]
            for im in block]  # fmt: skip
