"""``kernels/image.py``: names and extensions, decode limits, failure reasons, resize, load.

Ingest-level cases are elsewhere: modes, frames and EXIF orientations against Pillow in
``test_ingest.py``, the colour score in ``test_color_score.py``, hostile files (wrong formats,
pixel and scan bombs, the memory budget of a 1-worker cluster) in ``test_untrusted.py``. These
call each function of the module directly, on real photos (scikit-image's) encoded by Pillow in
memory, and compare with Pillow itself or a table written here.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import data

from pupsnr_dask.kernels import image as kimage

PHOTO = data.astronaut()[100:164, 150:246]  # 64 x 96, uint8 RGB


def _encoded(array: np.ndarray = PHOTO, **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, **save_kwargs)
    return buf.getvalue()


# -- names and extensions --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("a/b.JPG", ".jpg"),
        ("photo.Png", ".png"),
        ("x.tar.gz", ".gz"),
        ("..png", ".png"),
        ("...webp", ".webp"),
        (".png", ""),  # a hidden file without an extension
        ("dir.png/file", ""),  # the dot of a folder does not count
        ("noext", ""),
        ("trailing.", "."),
        ("", ""),
    ],
)
def test_image_extension_is_the_lower_case_tail_from_the_last_dot_of_the_base_name(name, ext):
    assert kimage.image_extension(name) == ext


@pytest.mark.parametrize(
    ("name", "formats"),
    [
        ("a.JPEG", ("JPEG",)),
        ("a.jpg", ("JPEG",)),
        ("b.bmp", ("BMP", "DIB")),
        ("c.TIFF", ("TIFF",)),
        ("d.gif", ("GIF",)),
        ("e.webp", ("WEBP",)),
        ("f.png", ("PNG",)),
    ],
)
def test_formats_for_an_image_extension_are_only_its_own(name, formats):
    assert kimage.formats_for(name) == formats


@pytest.mark.parametrize("name", [None, "", "notes.txt", "a.eps", ".png"])
def test_formats_for_any_other_name_are_every_allowed_format_once_in_order(name):
    expected = []
    for fmts in kimage.EXTENSION_FORMATS.values():
        expected += [f for f in fmts if f not in expected]
    assert kimage.formats_for(name) == tuple(expected) == kimage.ALLOWED_FORMATS
    assert kimage.IMAGE_EXTENSIONS == set(kimage.EXTENSION_FORMATS)


def test_escaped_name_writes_each_undecodable_byte_as_backslash_x_and_keeps_valid_names():
    listed = os.fsdecode(b"dir/caf\xe9-\xff\xfe.png")  # Latin-1 bytes: not UTF-8
    escaped = kimage.escaped_name(listed)
    assert escaped == "dir/caf\\xe9-\\xff\\xfe.png"
    escaped.encode("utf-8")  # storable: no lone surrogates left
    for valid in ("café.png", "写真.jpg", "plain.png", "back\\xff.png"):
        assert kimage.escaped_name(valid) is valid


def test_name_failure_is_none_for_valid_utf8_and_names_the_escaped_form_otherwise():
    assert kimage.name_failure("café.png") is None
    assert kimage.name_failure(os.fsdecode(b"bad\xff.png")) == (
        "file name is not valid UTF-8: stored escaped as 'bad\\xff.png'"
    )


# -- decode_rgb ----------------------------------------------------------------------------------
def test_decode_rgb_of_a_file_object_is_pillows_rgb_image_pixel_for_pixel():
    for fmt, ext in (("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp")):
        raw = _encoded(format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        img = kimage.decode_rgb(io.BytesIO(raw), name="x" + ext)
        assert img.mode == "RGB" and img.size == (96, 64)
        np.testing.assert_array_equal(np.asarray(img), PHOTO)
    gray = kimage.decode_rgb(io.BytesIO(_encoded(PHOTO[..., 0], format="PNG")), name="g.png")
    with Image.open(io.BytesIO(_encoded(PHOTO[..., 0], format="PNG"))) as ref:
        np.testing.assert_array_equal(np.asarray(gray), np.asarray(ref.convert("RGB")))


def test_decode_rgb_takes_the_extension_from_name_before_the_path(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(_encoded(format="PNG"))
    with pytest.raises(kimage.DecodeRefusedError, match="not a JPEG file"):
        kimage.decode_rgb(str(path))  # the path's own extension by default
    np.testing.assert_array_equal(np.asarray(kimage.decode_rgb(str(path), name="x.png")), PHOTO)


def test_decode_rgb_without_a_name_tries_every_allowed_format():
    raw = _encoded(format="GIF")
    img = kimage.decode_rgb(io.BytesIO(raw))
    with Image.open(io.BytesIO(raw)) as ref:
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ref.convert("RGB")))
    with pytest.raises(UnidentifiedImageError):  # nothing it could be: Pillow's own error
        kimage.decode_rgb(io.BytesIO(b"not an image at all" * 10))
    # A format no extension allows, even unnamed: EPS is never handed to Ghostscript.
    with pytest.raises(UnidentifiedImageError):
        kimage.decode_rgb(io.BytesIO(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"))


def test_decode_rgb_allows_exactly_max_pixels_and_refuses_one_more():
    raw = _encoded(format="PNG")
    assert kimage.decode_rgb(io.BytesIO(raw), 96 * 64, name="a.png").size == (96, 64)
    with pytest.raises(kimage.TooManyPixelsError) as err:
        kimage.decode_rgb(io.BytesIO(raw), 96 * 64 - 1, name="a.png")
    assert str(err.value) == "96 x 64 pixels is more than max_pixels=6143"
    assert isinstance(err.value, ValueError)


def test_decode_rgb_allows_exactly_max_bytes_and_refuses_one_less_rounding_outward():
    raw = _encoded(PHOTO[..., 1], format="PNG")  # mode L: 1 byte + 7 for the RGB copies
    need = 96 * 64 * (1 + 4 + 3)
    assert kimage.decode_rgb(io.BytesIO(raw), name="l.png", max_bytes=need).mode == "RGB"
    with pytest.raises(kimage.DecodeRefusedError) as err:
        kimage.decode_rgb(io.BytesIO(raw), name="l.png", max_bytes=need - 1)
    assert str(err.value) == "cannot decode: would need 1 MB to decode, more than the 0 MB limit"


def test_decode_rgb_allows_exactly_max_scans_of_a_jpeg_and_refuses_more():
    raw = _encoded(format="JPEG", progressive=True)  # libjpeg's progressive script: 10 scans
    assert kimage.jpeg_scan_count(raw) == 10
    img = kimage.decode_rgb(io.BytesIO(raw), name="p.jpg", max_scans=10)
    with Image.open(io.BytesIO(raw)) as ref:
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ref))
    with pytest.raises(kimage.DecodeRefusedError) as err:
        kimage.decode_rgb(io.BytesIO(raw), name="p.jpg", max_scans=9)
    assert str(err.value) == "cannot decode: 10 JPEG scans, more than 9 (a decoding bomb?)"
    # The same bytes unnamed: every allowed format tried, JPEG among them, so still counted.
    with pytest.raises(kimage.DecodeRefusedError, match="10 JPEG scans"):
        kimage.decode_rgb(io.BytesIO(raw), max_scans=9)


def test_decode_rgb_turns_by_the_exif_orientation_like_pillow():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    raw = _encoded(format="PNG", exif=exif)
    img = kimage.decode_rgb(io.BytesIO(raw), name="t.png")
    assert img.size == (64, 96)
    with Image.open(io.BytesIO(raw)) as ref:
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ImageOps.exif_transpose(ref)))


# -- decode_bytes and decode_budget --------------------------------------------------------------
#: Bytes a pixel Pillow keeps for each mode, by the rule of decode_bytes' docstring.
NATIVE = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I": 4, "F": 4, "LA": 4, "RGB": 4, "RGBA": 4,
          "CMYK": 4, "YCbCr": 4, "HSV": 4}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(NATIVE))
def test_decode_bytes_is_the_frame_plus_the_rgb_image_and_its_copy_by_mode(mode):
    img = Image.new(mode, (30, 20))
    assert kimage.decode_bytes(img) == 600 * (NATIVE[mode] + 4 + 3)
    assert kimage.decode_bytes(img, turned=True) == 600 * (2 * NATIVE[mode] + 4 + 3)


def test_decode_bytes_adds_the_webp_decoders_buffers():
    with Image.open(io.BytesIO(_encoded(format="WEBP", lossless=True))) as img:
        assert img.format == "WEBP"
        assert kimage.decode_bytes(img) == 96 * 64 * (4 + 4 + 3 + 10)
    with Image.open(io.BytesIO(_encoded(format="PNG"))) as img:
        assert kimage.decode_bytes(img) == 96 * 64 * (4 + 4 + 3)


def test_decode_budget_outside_a_worker_is_the_module_limit_and_never_imports_dask():
    assert kimage.decode_budget() == kimage.MAX_DECODE_BYTES == 1 << 30
    code = (
        "import sys\n"
        "from pupsnr_dask.kernels.image import decode_budget, MAX_DECODE_BYTES\n"
        "assert decode_budget() == MAX_DECODE_BYTES, decode_budget()\n"
        "assert 'distributed' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(
    ("memory_limit", "threads", "budget"),
    [
        ("1GB", 4, 125_000_000),  # half of 1 GB, shared by 4 decoding threads
        ("100GB", 2, 1 << 30),  # never more than the module limit
        (0, 2, 1 << 30),  # no memory limit
    ],
)
def test_decode_budget_on_a_worker_is_half_its_memory_limit_per_thread(
    memory_limit, threads, budget
):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=threads, memory_limit=memory_limit,
                     processes=False, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        assert client.submit(kimage.decode_budget, pure=False).result(timeout=60) == budget


# -- jpeg_scan_count -----------------------------------------------------------------------------
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
SCAN = b"\xff\xda\x00\x02" + b"\x11\x22"  # an SOS segment (length 2), then entropy data


@pytest.mark.parametrize(
    ("body", "scans"),
    [
        (b"", 0),
        (SCAN, 1),
        (SCAN * 3, 3),
        (SCAN + b"\xff\x00\x33" + SCAN, 2),  # a stuffed 0xFF in the entropy data
        (SCAN + b"\xff\xd0\x44\xff\xd7\x55" + SCAN, 2),  # restart markers: no length
        (b"\xff\xff\xff" + SCAN, 1),  # fill bytes before a marker
        (b"\xff\xfe\x00\x06\xff\xda\xff\xda" + SCAN, 1),  # SOS bytes inside a comment
        (b"\xff\xe1\x00\x04\xff\xda" + SCAN, 1),  # and inside an APP1 (EXIF) segment
        (SCAN + EOI + SCAN * 5, 1),  # nothing after the end of the first image
    ],
)
def test_jpeg_scan_count_follows_segment_lengths_to_the_first_eoi(body, scans):
    assert kimage.jpeg_scan_count(SOI + body + EOI) == scans


@pytest.mark.parametrize(
    ("data", "scans"),
    [
        (SOI, 0),
        (SOI + SCAN * 2, 2),  # no EOI
        (SOI + SCAN + b"\xff", 1),  # cut in a marker, its length or its segment
        (SOI + SCAN + b"\xff\xda", 1),
        (SOI + SCAN + b"\xff\xda\x00", 1),
        (SOI + b"\xff\xe1\x40\x00" + SCAN * 3, 0),  # the rest is inside a cut APP1 segment
        (b"", 0),
    ],
)
def test_jpeg_scan_count_of_a_truncated_file_counts_the_scans_it_has(data, scans):
    assert kimage.jpeg_scan_count(data) == scans


def test_jpeg_scan_count_of_real_jpegs_with_restart_markers():
    plain = _encoded(format="JPEG", restart_marker_blocks=1)
    rst = sum(plain.count(bytes([0xFF, m])) for m in range(0xD0, 0xD8))
    assert rst > 10  # the markers are really there
    assert kimage.jpeg_scan_count(plain) == 1
    progressive = _encoded(format="JPEG", progressive=True, restart_marker_blocks=1)
    assert kimage.jpeg_scan_count(progressive) == 10


# -- failure reasons -----------------------------------------------------------------------------
def _raised(raw: bytes, name: str) -> Exception:
    try:
        kimage.decode_rgb(io.BytesIO(raw), name=name)
    except Exception as err:
        return err
    raise AssertionError(f"{name} decoded")


def test_decode_failure_gives_each_kind_of_error_its_recorded_reason():
    png, jpeg = _encoded(format="PNG"), _encoded(format="JPEG")
    bomb = f"too many pixels: more than {kimage.MAX_PIXELS} (a decompression bomb?)"
    cases = [
        (kimage.TooManyPixelsError("96 x 64 pixels is more than max_pixels=1"), bomb),
        (Image.DecompressionBombError("Image size exceeds limit"), bomb),
        (
            _raised(png, "x.jpg"),
            "cannot decode: not a JPEG file (the extension says .jpg; it is a PNG file)",
        ),
        (_raised(b"\x00" * 100, ""), "cannot decode: not a recognised image format"),
        (_raised(png[: len(png) // 2], "x.png"), "cannot decode: truncated image data"),
        (_raised(jpeg[: len(jpeg) // 2], "x.jpg"), "cannot decode: truncated image data"),
        (EOFError(), "cannot decode: truncated image data"),
        (OSError("broken data stream when reading image file"), "cannot decode: OSError"),
        (ZeroDivisionError(), "cannot decode: ZeroDivisionError"),
    ]
    for err, reason in cases:
        assert kimage.decode_failure(err) == reason, err


def test_read_failure_names_the_os_reason(tmp_path):
    errors = []
    for path in (tmp_path / "gone.png", tmp_path):
        try:
            open(path, "rb")
        except OSError as err:
            errors.append(err)
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere")
    try:
        open(tmp_path / "link.png", "rb")
    except OSError as err:
        errors.append(err)
    vanished = "cannot read: not found (it vanished, or is a broken symbolic link)"
    assert [kimage.read_failure(e) for e in errors] == [
        vanished,
        "cannot read: Is a directory",
        vanished,
    ]
    assert kimage.read_failure(TimeoutError()) == "cannot read: TimeoutError"  # no strerror


# -- Record, resize_lanczos, load_resized ---------------------------------------------------------
def test_record_defaults_and_is_frozen():
    rec = kimage.Record("a.png", False)
    assert (rec.reason, rec.width, rec.height) == ("", 0, 0) and math.isnan(rec.color_score)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.accepted = True  # type: ignore[misc]


@pytest.mark.parametrize("size", [16, 37, 128])
def test_resize_lanczos_is_pillows_lanczos_to_a_square(size):
    img = Image.fromarray(PHOTO)
    got = kimage.resize_lanczos(img, size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    expected = np.asarray(img.resize((size, size), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(got, expected)


def test_load_resized_accepts_a_colour_photo_with_its_decoded_size_and_score():
    exif = Image.Exif()
    exif[0x0112] = 8  # turned: the recorded size is the upright one
    raw = _encoded(format="PNG", exif=exif)
    image, record = kimage.load_resized(io.BytesIO(raw), "sub/p.png", 24, 0.995)
    with Image.open(io.BytesIO(raw)) as ref:
        upright = ImageOps.exif_transpose(ref).convert("RGB")
    assert record == kimage.Record(
        "sub/p.png", True, "", kimage.color_score(np.asarray(upright)), 64, 96
    )
    np.testing.assert_array_equal(
        image, np.asarray(upright.resize((24, 24), Image.Resampling.LANCZOS))
    )


def test_load_resized_rejects_a_score_equal_to_the_threshold_and_accepts_just_above():
    raw = _encoded(format="PNG")
    score = kimage.color_score(PHOTO)
    image, record = kimage.load_resized(io.BytesIO(raw), "p.png", 8, score)
    assert image is None
    assert record == kimage.Record("p.png", False, f"not colour: score >= {score}", score, 96, 64)
    above = math.nextafter(score, math.inf)
    image, record = kimage.load_resized(io.BytesIO(raw), "p.png", 8, above)
    assert record.accepted and image.shape == (8, 8, 3)


def test_load_resized_rejects_a_constant_channel_with_its_size():
    flat = PHOTO.copy()
    flat[..., 2] = 40
    image, record = kimage.load_resized(io.BytesIO(_encoded(flat, format="PNG")), "f.png", 8, 1.0)
    assert image is None
    assert (record.accepted, record.reason, record.width, record.height) == (
        False,
        "not colour: a channel is constant",
        96,
        64,
    )
    assert math.isnan(record.color_score)


def test_load_resized_never_raises_for_a_bad_file_and_records_why(tmp_path):
    png = _encoded(format="PNG")
    cases = {
        "cut.png": (io.BytesIO(png[:300]), "cannot decode: truncated image data"),
        "a.jpg": (
            io.BytesIO(png),
            "cannot decode: not a JPEG file (the extension says .jpg; it is a PNG file)",
        ),
        "big.png": (
            io.BytesIO(png),
            "cannot decode: would need 1 MB to decode, more than the 0 MB limit",
        ),
    }
    for source, (fp, reason) in cases.items():
        budget = 1000 if source == "big.png" else None
        image, record = kimage.load_resized(fp, source, 8, 0.995, max_bytes=budget)
        assert image is None
        assert record == kimage.Record(source, False, reason), source
    image, record = kimage.load_resized(str(tmp_path / "gone.png"), "gone.png", 8, 0.995)
    assert image is None and not record.accepted and record.reason.startswith("cannot ")
