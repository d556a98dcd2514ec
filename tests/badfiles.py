"""A corpus of messy input files, each with what ingest must make of it.

``build_corpus(root, size)`` writes the files below ``root`` and returns a :class:`Case` per
entry of the listing: kept (with the exact pixels expected at ``size`` x ``size``, computed here
with plain NumPy and Pillow, independently of pupsnr_dask) or rejected (with the start of the
recorded reason). Everything is generated: no downloads.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import random_photo
from PIL import Image


@dataclass
class Case:
    """What ingest must do with one entry below SRC."""

    source: str
    what: str
    reason: str = ""  # start of the recorded reason, for rejections
    pixels: np.ndarray | None = None  # expected img_true, for kept files
    size: tuple[int, int] | None = None  # expected (original_width, original_height)
    needs_permissions: bool = False  # meaningful only where file permissions are enforced

    @property
    def kept(self) -> bool:
        return self.reason == ""


def lanczos(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.LANCZOS))


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: signature, IHDR, one IDAT of ``rows`` (filter bytes included)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png16_rgb(array: np.ndarray) -> bytes:
    """A 48-bit RGB PNG of a uint16 ``(h, w, 3)`` array (Pillow cannot write these)."""
    h, w, _ = array.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    return png_bytes(w, h, 16, 2, rows)


def _save(root: Path, rel: str, img: Image.Image, **kwargs) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _photo(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    return random_photo(rng, h, w)


def build_corpus(root: Path, size: int, permissions: bool = True) -> dict[str, Case]:
    """Write the corpus below ``root``; return the expected outcome of every listed entry.

    ``permissions``: include a file and a folder of mode 000, which only a process that
    permissions apply to cannot read (not root with CAP_DAC_OVERRIDE).
    """
    rng = np.random.default_rng(2024)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def kept(rel: str, what: str, rgb: np.ndarray) -> None:
        cases.append(Case(rel, what, "", lanczos(rgb, size), (rgb.shape[1], rgb.shape[0])))

    def rejected(rel: str, what: str, reason: str, **kw) -> None:
        cases.append(Case(rel, what, reason, **kw))

    # -- broken or hostile files ----------------------------------------------------------
    (root / "empty.png").write_bytes(b"")
    rejected("empty.png", "zero-byte file", "cannot decode: empty file")
    good_jpeg = _save(root, "whole.jpg", Image.fromarray(_photo(rng)), quality=90)
    data = good_jpeg.read_bytes()
    good_jpeg.unlink()
    (root / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    rejected("truncated.jpg", "truncated JPEG", "cannot decode: truncated image data")
    good_png = _save(root, "whole.png", Image.fromarray(_photo(rng)))
    data = good_png.read_bytes()
    good_png.unlink()
    (root / "truncated.png").write_bytes(data[: len(data) * 6 // 10])
    rejected("truncated.png", "truncated PNG", "cannot decode: truncated image data")
    (root / "text.jpg").write_text("this is not a JPEG but a note\n" * 20)
    rejected("text.jpg", "text named .jpg", "cannot decode: not a JPEG file (the extension says")
    (root / "bomb.png").write_bytes(png_bytes(100_000, 100_000, 8, 2, b"\x00" * 64))
    rejected("bomb.png", "decompression bomb, 10^10 pixels declared", "too many pixels")
    (root / "bomb_90mpx.png").write_bytes(png_bytes(10_000, 9_000, 8, 2, b"\x00" * 64))
    rejected("bomb_90mpx.png", "bomb just above Pillow's warning limit", "too many pixels")
    (root / "notes.txt").write_text("a note")
    rejected("notes.txt", "not an image extension", "not an image file extension")

    # -- odd but valid encodings: kept, converted as documented --------------------------
    deep = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    _save(root, "gray16.png", Image.fromarray(deep))
    rejected("gray16.png", "16-bit grayscale PNG", "not colour")
    rgb16 = (_photo(rng).astype(np.uint16) << 8) | rng.integers(0, 256, (48, 64, 3), np.uint16)
    (root / "rgb16.png").write_bytes(png16_rgb(rgb16))
    kept("rgb16.png", "48-bit RGB PNG: the high byte of each sample", (rgb16 >> 8).astype(np.uint8))
    cmyk = _save(root, "cmyk.jpg", Image.fromarray(_photo(rng)).convert("CMYK"), quality=95)
    kept("cmyk.jpg", "CMYK JPEG", np.asarray(Image.open(cmyk).convert("RGB")))
    pal = _save(root, "palette.png", Image.fromarray(_photo(rng)).quantize(64))
    kept("palette.png", "palette PNG", np.asarray(Image.open(pal).convert("RGB")))
    pal_t = _save(
        root, "palette_transparent.png", Image.fromarray(_photo(rng)).quantize(64), transparency=0
    )
    with Image.open(pal_t) as img:
        palette = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
        kept("palette_transparent.png", "palette PNG with tRNS", palette[np.asarray(img)])
    rgba = np.dstack([_photo(rng), rng.integers(0, 256, (48, 64), np.uint8)])
    _save(root, "transparent.png", Image.fromarray(rgba, "RGBA"))
    kept("transparent.png", "RGBA PNG: alpha dropped, not composited", rgba[..., :3])
    frames = [Image.fromarray(_photo(rng)).quantize(32) for _ in range(3)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    kept("animated.gif", "animated GIF: first frame", np.asarray(frames[0].convert("RGB")))
    upright = _photo(rng, 40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = np.rot90(upright, k=1)  # what the camera wrote: the upright image turned left
    rotated = _save(root, "exif_rotated.jpg", Image.fromarray(stored), exif=exif, quality=95)
    raw = np.asarray(Image.open(rotated).convert("RGB"))  # decoded, orientation not applied
    kept("exif_rotated.jpg", "EXIF orientation 6", np.rot90(raw, k=-1))
    tiny = _photo(rng, 7, 10)
    _save(root, "tiny.png", Image.fromarray(tiny))
    kept("tiny.png", "smaller than the target: upscaled", tiny)
    gray = _photo(rng)[..., :1].repeat(3, axis=2)
    _save(root, "gray_as_rgb.png", Image.fromarray(gray))
    rejected("gray_as_rgb.png", "grayscale saved as RGB", "not colour")
    flat = _photo(rng)
    flat[..., 2] = 9
    _save(root, "constant_blue.png", Image.fromarray(flat))
    rejected("constant_blue.png", "a constant channel", "not colour: a channel is constant")

    # -- names and folders ----------------------------------------------------------------
    for rel, what in (
        ("name with spaces.png", "spaces in the name"),
        ("ünïcødé/日本語 写真.png", "non-ASCII folder and name"),
        ("a/b/c/d/deep.png", "nested folders"),
        ("folder.png/inside.png", "a folder named like an image"),
    ):
        rgb = _photo(rng)
        _save(root, rel, Image.fromarray(rgb))
        kept(rel, what, rgb)

    # -- links, special files, permissions -------------------------------------------------
    target = _photo(rng)
    _save(root, "target.png", Image.fromarray(target))
    kept("target.png", "target of a symbolic link", target)
    os.symlink("target.png", root / "link_to_file.png")
    kept("link_to_file.png", "symbolic link to a file: followed", target)
    os.symlink("nowhere.png", root / "broken_link.png")
    rejected("broken_link.png", "dangling symbolic link", "cannot read: not found")
    os.symlink("loop_b.png", root / "loop_a.png")
    os.symlink("loop_a.png", root / "loop_b.png")
    for rel in ("loop_a.png", "loop_b.png"):
        rejected(rel, "symbolic link loop", "cannot read: Too many levels of symbolic links")
    (root / "a" / "up").symlink_to("..", target_is_directory=True)
    rejected("a/up", "symbolic link to a parent folder (a loop)", "symbolic link to a folder")
    os.symlink("a", root / "a_link.png", target_is_directory=True)
    rejected("a_link.png", "symbolic link to a folder", "symbolic link to a folder")
    os.mkfifo(root / "pipe.png")
    rejected("pipe.png", "named pipe (opening it would block)", "not a regular file")
    if not permissions:
        return {c.source: c for c in cases}
    locked = _save(root, "unreadable.png", Image.fromarray(_photo(rng)))
    locked.chmod(0)
    rejected(
        "unreadable.png", "mode 000 file", "cannot read: Permission denied", needs_permissions=True
    )
    closed = root / "closed"
    _save(root, "closed/hidden.png", Image.fromarray(_photo(rng)))
    closed.chmod(0)
    rejected(
        "closed/",
        "mode 000 folder",
        "cannot list folder: Permission denied",
        needs_permissions=True,
    )
    return {c.source: c for c in cases}


def restore_permissions(root: Path) -> None:
    """Undo the chmod 000 of the corpus so that it can be deleted."""
    for rel in ("unreadable.png", "closed"):
        path = root / rel
        if path.exists():
            path.chmod(0o755)
