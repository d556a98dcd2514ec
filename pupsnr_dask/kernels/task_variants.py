"""Task inputs: what a U-Net for super-resolution, JPEG removal, denoising or deblurring sees.

Each input is a kernel on a batch of img_true, ``(n, h, w, 3)`` uint8 ->
``(n, h, w, 3)`` uint8, applied image by image (a result never depends on the rest of the
batch). Its parameter is part of its name; the grammar (:data:`FAMILIES`,
:func:`parse_variant`)::

    sr<k>          k an integer >= 2 dividing both image sides    sr2, sr4, sr8
    jpeg<q>        q an integer quality 1 ... 100                   jpeg10, jpeg75
    noise<sigma>   sigma a positive decimal number, 0-255 scale     noise25, noise2.5, noise0.5
    blur<radius>   radius a positive decimal number, in pixels      blur2, blur1.5

Numbers are written in one canonical way so that one input has one name: digits, an optional
``.`` followed by digits not ending in ``0``, no leading zeros (``noise25``, not
``noise25.0`` or ``noise025``; ``noise0.5``, not ``noise.5``), no sign or exponent.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

#: Chroma subsampling of ``jpeg<q>``: Pillow's default for RGB, passed explicitly so that a
#: change of Pillow's default cannot change results.
JPEG_SUBSAMPLING = "4:2:0"
#: Version tag hashed into every ``noise<sigma>`` seed; bump it only with a new definition.
NOISE_SEED_TAG = b"pupsnr_dask.noise/v1"

_INT = r"[1-9][0-9]*"
_DECIMAL = r"(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?"


def _check_batch(images: np.ndarray, name: str = "images") -> None:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 of shape (n, h, w, 3), got {images.dtype} {images.shape}"
        )


def _map_images(images: np.ndarray, one: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    """Apply a Pillow function to each image of a batch; uint8 out, same shape."""
    out = np.empty(images.shape, dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(one(Image.fromarray(np.ascontiguousarray(img))))
    return out


def sr_kernel(images: np.ndarray, factor: int) -> np.ndarray:
    """Pillow BICUBIC down by ``factor``, then BICUBIC back up: the input of an SR model.

    Each image of side ``(w, h)`` is resized with ``Image.resize((w // k, h // k),
    Image.Resampling.BICUBIC, reducing_gap=None)``, then resized back to ``(w, h)`` the same
    way. Pillow's BICUBIC is a cubic convolution (``a = -0.5``) whose support widens by the
    reduction factor when shrinking (antialiased, like MATLAB's ``imresize``, though not
    bit-identical to it), computed in 8-bit fixed point and rounded to uint8 at each step.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, 3)``, uint8 RGB, in memory.
    factor : int
        ``k``, at least 2, dividing ``h`` and ``w`` (otherwise ValueError: the low-resolution
        grid then lines up with the PU blocks at scale ``k``).

    Returns
    -------
    np.ndarray
        Shape ``(n, h, w, 3)``, uint8.

    Examples
    --------
    >>> flat = np.full((1, 8, 8, 3), 77, dtype=np.uint8)
    >>> bool((sr_kernel(flat, 4) == 77).all())
    True
    """
    _check_batch(images)
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 2:
        raise ValueError(f"sr factor must be an integer >= 2, got {factor!r}")
    h, w = images.shape[1:3]
    if h % factor or w % factor:
        raise ValueError(
            f"sr{factor} needs image sides divisible by {factor}, got {h} x {w} (h x w)"
        )
    small, full = (w // factor, h // factor), (w, h)
    bicubic = Image.Resampling.BICUBIC

    def one(img: Image.Image) -> Image.Image:
        low = img.resize(small, bicubic, reducing_gap=None)
        return low.resize(full, bicubic, reducing_gap=None)

    return _map_images(images, one)


def jpeg_kernel(images: np.ndarray, quality: int) -> np.ndarray:
    """Pillow JPEG encode and decode at ``quality``, chroma subsampled 4:2:0.

    Each image is saved to memory with ``Image.save(buf, "JPEG", quality=q,
    subsampling="4:2:0")`` (:data:`JPEG_SUBSAMPLING`, Pillow's default for RGB, passed
    explicitly; libjpeg's standard quantisation tables scaled by ``q``; Huffman options do not
    change pixels) and decoded with ``Image.open(buf).convert("RGB")``. Results are those of
    the libjpeg(-turbo) that Pillow ships; its integer DCT is the same on every platform.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, 3)``, uint8 RGB, in memory.
    quality : int
        1 (worst) ... 100. Pillow advises against values above 95, which turn off parts of the
        compression; they are allowed.

    Returns
    -------
    np.ndarray
        Shape ``(n, h, w, 3)``, uint8.
    """
    _check_batch(images)
    if isinstance(quality, bool) or not isinstance(quality, int | np.integer):
        raise ValueError(f"jpeg quality must be an integer in 1 ... 100, got {quality!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be an integer in 1 ... 100, got {quality!r}")

    def one(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(quality), subsampling=JPEG_SUBSAMPLING)
        buf.seek(0)
        with Image.open(buf) as decoded:
            return decoded.convert("RGB")

    return _map_images(images, one)


def blur_kernel(images: np.ndarray, radius: float) -> np.ndarray:
    """Pillow ``ImageFilter.GaussianBlur(radius)``: the input of a deblurring model.

    Pillow's Gaussian blur approximates a Gaussian of standard deviation ``radius`` by three
    extended box blurs, per channel, with the image's edge pixels repeated beyond its borders,
    rounded to uint8.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, 3)``, uint8 RGB, in memory.
    radius : float
        Positive, in pixels.

    Returns
    -------
    np.ndarray
        Shape ``(n, h, w, 3)``, uint8.
    """
    _check_batch(images)
    radius = _positive_number("blur radius", radius)
    blur = ImageFilter.GaussianBlur(radius)
    return _map_images(images, lambda img: img.filter(blur))


def noise_seed(key: str, image: np.ndarray, sigma: float) -> int:
    """The seed of one image's noise: blake2b (256 bits) of its key, pixels and sigma.

    The hashed message is :data:`NOISE_SEED_TAG`, then four fields, each preceded by its
    length in bytes (8 bytes, little-endian): ``key`` in UTF-8, ``repr(float(sigma))`` in
    ASCII, the shape as ``"h,w,c"`` in ASCII, and the pixels (C order). The digest is read as
    a little-endian integer.

    Examples
    --------
    >>> img = np.zeros((2, 2, 3), dtype=np.uint8)
    >>> noise_seed("a.png", img, 25) == noise_seed("a.png", img, 25.0)
    True
    >>> noise_seed("a.png", img, 25) == noise_seed("b.png", img, 25)
    False
    """
    digest = hashlib.blake2b(digest_size=32)
    digest.update(NOISE_SEED_TAG)
    shape = ",".join(str(d) for d in image.shape)
    fields = (
        key.encode("utf-8"),
        repr(float(sigma)).encode("ascii"),
        shape.encode("ascii"),
        np.ascontiguousarray(image).tobytes(),
    )
    for field in fields:
        digest.update(len(field).to_bytes(8, "little"))
        digest.update(field)
    return int.from_bytes(digest.digest(), "little")


def noise_kernel(images: np.ndarray, keys: Sequence[str], sigma: float) -> np.ndarray:
    """Gaussian noise of standard deviation ``sigma`` (0-255 scale), rounded and clipped.

    For image ``x`` with key ``k`` (its ``source`` string)::

        rng = np.random.Generator(np.random.PCG64(noise_seed(k, x, sigma)))
        z = rng.standard_normal(size=x.shape)          # float64, C order (y, x, channel)
        out = clip(rint(x + sigma * z), 0, 255).astype(uint8)   # rint: half to even

    No global generator is used: an image's noise depends only on its key, its pixels and
    sigma, so it is bit-identical whatever the batch, chunking, workers or rerun, and two
    images with the same pixels but different keys get different noise. NumPy guarantees
    PCG64's bit stream across versions but not ``standard_normal``'s transform of it: a
    NumPy release that changed that algorithm would change these images.

    Parameters
    ----------
    images : np.ndarray
        Shape ``(n, h, w, 3)``, uint8 RGB, in memory.
    keys : sequence of str
        ``n`` keys, one per image, in order: each image's ``source``.
    sigma : float
        Positive.

    Returns
    -------
    np.ndarray
        Shape ``(n, h, w, 3)``, uint8.
    """
    _check_batch(images)
    sigma = _positive_number("noise sigma", sigma)
    keys = list(keys)
    if len(keys) != len(images):
        raise ValueError(
            f"keys must give one key per image: {len(keys)} keys, {len(images)} images"
        )
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, got {type(key).__name__} {key!r}")
    out = np.empty(images.shape, dtype=np.uint8)
    noisy = np.empty(images.shape[1:], dtype=np.float64)
    for i, (key, img) in enumerate(zip(keys, images, strict=True)):
        rng = np.random.Generator(np.random.PCG64(noise_seed(key, img, sigma)))
        np.multiply(rng.standard_normal(size=img.shape), sigma, out=noisy)
        np.add(noisy, img, out=noisy)
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0, 255, out=noisy)
        out[i] = noisy
    return out


def _positive_number(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Family:
    """One parameterised family of inputs: its grammar and how to build its kernel.

    Attributes
    ----------
    name : str
        The prefix of every variant name of the family (``"sr"``).
    param : str
        The kernel's keyword for the parameter (``"factor"``).
    grammar : str
        One line: the name pattern and what the parameter may be.
    definition : str
        One line, a template with ``{value}``: what the input is.
    kernel : callable
        ``kernel(images, **{param: value})``, or ``kernel(images, keys, **{param: value})``
        when ``needs_keys``.
    needs_keys : bool
        The kernel takes the images' keys (``source`` strings) after the images.
    """

    name: str
    param: str
    grammar: str
    definition: str
    kernel: Callable[..., np.ndarray]
    needs_keys: bool = False


#: The parameterised families, by name prefix. ``pupsnr variants`` lists these lines.
FAMILIES: dict[str, Family] = {
    "sr": Family(
        "sr",
        "factor",
        "sr<k>: k an integer >= 2 dividing both image sides (sr2, sr4, sr8)",
        "Pillow BICUBIC down by a factor {value}, then BICUBIC back up (input of a "
        "super-resolution model)",
        sr_kernel,
    ),
    "jpeg": Family(
        "jpeg",
        "quality",
        "jpeg<q>: q an integer quality 1 ... 100 (jpeg10, jpeg75)",
        "Pillow JPEG encode/decode at quality {value}, chroma 4:2:0 (input of a JPEG "
        "artefact-removal model)",
        jpeg_kernel,
    ),
    "noise": Family(
        "noise",
        "sigma",
        "noise<sigma>: sigma a positive decimal number (noise25, noise2.5)",
        "Gaussian noise of standard deviation {value} on the 0-255 scale, rounded and "
        "clipped to uint8, seeded from each image's source and pixels (input of a denoising "
        "model)",
        noise_kernel,
        needs_keys=True,
    ),
    "blur": Family(
        "blur",
        "radius",
        "blur<radius>: radius a positive decimal number of pixels (blur2, blur1.5)",
        "Pillow GaussianBlur({value}) (input of a deblurring model)",
        blur_kernel,
    ),
}

_GRAMMAR = {"sr": _INT, "jpeg": _INT, "noise": _DECIMAL, "blur": _DECIMAL}
_NAME = re.compile(r"(sr|jpeg|noise|blur)(.*)", re.DOTALL)


def parse_variant(name: str) -> tuple[str, dict[str, int | float]]:
    """Split a parameterised variant name into its family and parameters.

    Parameters
    ----------
    name : str
        A name of the grammar in the module docstring.

    Returns
    -------
    family : str
        A key of :data:`FAMILIES`.
    params : dict
        The kernel's keyword argument: ``{"factor": int}``, ``{"quality": int}``,
        ``{"sigma": float}`` or ``{"radius": float}``.

    Raises
    ------
    ValueError
        Naming the value and the grammar, for a name of no family or a bad parameter.

    Examples
    --------
    >>> parse_variant("sr4"), parse_variant("noise2.5")
    (('sr', {'factor': 4}), ('noise', {'sigma': 2.5}))
    >>> parse_variant("jpeg0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: variant 'jpeg0': quality must be written as in jpeg<q>: ..., got '0'
    """
    if not isinstance(name, str):
        raise TypeError(f"variant name must be a str, got {type(name).__name__}")
    match = _NAME.fullmatch(name)
    if match is None:
        grammar = "; ".join(f.grammar for f in FAMILIES.values())
        raise ValueError(f"variant {name!r} is not of a parameterised family: {grammar}")
    prefix, text = match.groups()
    family = FAMILIES[prefix]
    bad = f"variant {name!r}: {family.param} must be written as in {family.grammar}"
    if re.fullmatch(_GRAMMAR[prefix], text) is None:
        raise ValueError(f"{bad}, got {text!r}")
    value: int | float = int(text) if _GRAMMAR[prefix] == _INT else float(text)
    if (prefix == "sr" and value < 2) or (prefix == "jpeg" and not 1 <= value <= 100):
        raise ValueError(f"{bad}, got {text!r}")
    if value <= 0:
        raise ValueError(f"{bad} (positive), got {text!r}")
    return prefix, {family.param: value}
