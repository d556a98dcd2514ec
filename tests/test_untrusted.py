"""Untrusted input: files that lie about their format or size, names and attributes that hold
markup or mathtext, credentials that must never be written or shown.

Everything is real: files written here (by Pillow or by hand, byte by byte), the ``pupsnr``
command in subprocesses, a Dask worker process with a memory limit, the moto S3 server on
127.0.0.1, a stand-in ``gs`` program that records whether Pillow ever started it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import dask
import fsspec
import killhook.sitecustomize as killhook
import numpy as np
import pytest
import xarray as xr
from badfiles import png_bytes
from conftest import random_photo, write_image
from PIL import Image, ImageOps

from pupsnr_dask import grid, schema
from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask.cli import main
from pupsnr_dask.ingest import load_source
from pupsnr_dask.kernels.image import MAX_PIXELS, TooManyPixelsError, decode_rgb, load_resized
from pupsnr_dask.report import html as html_report
from pupsnr_dask.report import plots
from pupsnr_dask.store.fs import lock_path, redact_argv
from pupsnr_dask.store.lock import UNREADABLE_HOLDER, StoreLock, StoreLockedError, describe
from pupsnr_dask.store.zarr_io import open_store

SIZE = 32
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")


def photo(seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    return random_photo(np.random.default_rng(seed), h, w)


def expected_pixels(path: Path) -> np.ndarray:
    """What ingest must store for a valid file: Pillow's own decode, upright, RGB, LANCZOS."""
    with Image.open(path) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    return np.asarray(rgb.resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def load(path: Path, **kw):
    return load_resized(str(path), path.name, SIZE, 0.995, **kw)


# -- 2. formats: only those the extension allows ------------------------------------------------
def odd_but_valid(root: Path) -> list[Path]:
    """Valid colour images in every encoding Pillow writes for the allowed formats."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(photo(1))
    rgba = Image.fromarray(np.dstack([photo(2), photo(3)[..., 0]]), "RGBA")
    exif = Image.Exif()
    exif[0x0112] = 8
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    jpeg = {
        "baseline.jpg": (rgb, {"quality": 90}),
        "progressive.jpg": (rgb, {"progressive": True}),
        "optimized.jpeg": (rgb, {"optimize": True}),
        "s444.jpg": (rgb, {"subsampling": 0}),
        "s422.jpg": (rgb, {"subsampling": 1}),
        "restart.jpg": (rgb, {"restart_marker_blocks": 1}),
        "cmyk.jpg": (rgb.convert("CMYK"), {}),
        "cmyk_progressive.jpg": (rgb.convert("CMYK"), {"progressive": True}),
        "exif_rotated.jpg": (rgb, {"exif": exif}),
        "comment.jpg": (rgb, {"comment": b"\xff\xda inside a comment " * 40}),
        "upper.JPG": (rgb, {}),
    }
    png = {
        "rgb.png": (rgb, {}),
        "rgba.png": (rgba, {}),
        "palette.png": (rgb.quantize(200), {}),
        "palette4bit.png": (rgb.quantize(16), {"bits": 4}),
        "palette_trns.png": (rgb.quantize(64), {"transparency": 3}),
        "uncompressed.png": (rgb, {"compress_level": 0}),
        "exif_rotated.png": (rgb, {"exif": exif}),
        "text_chunks.png": (rgb, {"pnginfo": _pnginfo()}),
        "..png": (rgb, {"format": "PNG"}),
    }
    other = {
        "lossy.webp": (rgb, {"quality": 70}),
        "lossless.webp": (rgb, {"lossless": True}),
        "alpha.webp": (rgba, {"lossless": True}),
        "exif.webp": (rgb, {"exif": exif}),
        "rgb24.bmp": (rgb, {}),
        "rgba32.bmp": (rgba, {}),
        "palette8.bmp": (rgb.quantize(200), {}),
        "raw.tif": (rgb, {}),
        "lzw.tif": (rgb, {"compression": "tiff_lzw"}),
        "deflate.tiff": (rgb, {"compression": "tiff_adobe_deflate"}),
        "packbits.tif": (rgb, {"compression": "packbits"}),
        "jpeg_in.tif": (rgb, {"compression": "jpeg"}),
        "rgba.tif": (rgba, {}),
        "cmyk.tif": (rgb.convert("CMYK"), {}),
        "exif_rotated.tif": (rgb, {"exif": exif}),
        "static.gif": (rgb.quantize(128), {}),
        "transparent.gif": (rgb.quantize(64), {"transparency": 1}),
        "non_interlaced.gif": (rgb.quantize(64), {"interlace": False}),
    }
    jpeg["icc.jpg"] = (rgb, {"icc_profile": icc})
    png["icc.png"] = (rgb, {"icc_profile": icc})
    paths = []
    for name, (img, kwargs) in {**jpeg, **png, **other}.items():
        img.save(root / name, **kwargs)
        paths.append(root / name)
    frames = [Image.fromarray(photo(10 + k)) for k in range(3)]
    for name, fmt, extra in (
        ("animated.png", "PNG", {}),  # APNG
        ("animated.webp", "WEBP", {"lossless": True}),
        ("animated.gif", "GIF", {}),
        ("multipage.tif", "TIFF", {}),
        ("multi_picture.jpg", "MPO", {}),  # Pillow reports it as MPO
    ):
        frames[0].save(root / name, format=fmt, save_all=True, append_images=frames[1:], **extra)
        paths.append(root / name)
    frames[0].save(root / "headerless.bmp", format="DIB")  # a DIB: BMP without file header
    paths.append(root / "headerless.bmp")
    return paths


def _pnginfo():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k in range(20):
        info.add_text(f"k{k}", "x" * 100, zip=k % 2 == 0)
    return info


def test_odd_but_valid_files_of_every_allowed_format_are_kept_as_pillow_decodes_them(tmp_path):
    paths = odd_but_valid(tmp_path / "valid")
    formats = set()
    for path in paths:
        with Image.open(path) as img:
            formats.add(img.format)
        image, record = load(path)
        assert record.accepted, (path.name, record.reason)
        np.testing.assert_array_equal(image, expected_pixels(path), err_msg=path.name)
    assert formats == {"JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF"}
    assert len(paths) >= 45


def fake_ghostscript(folder: Path) -> Path:
    """A ``gs`` on PATH that records each start in a file (Pillow's EPS decoder runs ``gs``)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "gs-was-run"
    script = folder / "gs"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    script.chmod(0o755)
    return marker


def eps_file(path: Path) -> Path:
    """A real Encapsulated PostScript file, as Pillow writes it (no Ghostscript needed)."""
    Image.fromarray(photo(4)).save(path, format="EPS")
    assert path.read_bytes().startswith(b"%!PS-Adobe")
    return path


def test_a_postscript_file_named_jpg_is_never_handed_to_ghostscript(tmp_path):
    marker = fake_ghostscript(tmp_path / "bin")
    src = tmp_path / "src"
    src.mkdir()
    eps_file(src / "holiday.jpg")
    write_image(src / "real.png", photo(5))
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "pupsnr_dask", "ingest", str(src), "-o"]
    command += [str(tmp_path / "d.zarr"), "--size", str(SIZE), "--n-workers", "1", "-q"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), f"Ghostscript was run: {marker.read_text()}"
    rejected = {
        r["source"]: r["reason"]
        for r in schema.json_attr(xr.open_zarr(tmp_path / "d.zarr").attrs, "rejected")
    }
    assert rejected == {"holiday.jpg": "cannot decode: not a JPEG file (the extension says .jpg)"}


def ico_bytes(entries: list[tuple[int, int, bytes]]) -> bytes:
    """An ICO file of PNG-encoded entries, each declared ``(width, height)`` (0 means 256)."""
    head = struct.pack("<HHH", 0, 1, len(entries))
    offset = 6 + 16 * len(entries)
    table, data = b"", b""
    for w, h, payload in entries:
        table += struct.pack("<BBBBHHII", w % 256, h % 256, 0, 0, 1, 32, len(payload), offset)
        offset += len(payload)
        data += payload
    return head + table + data


def test_files_of_other_formats_named_like_an_allowed_one_are_rejected_undecoded(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(photo(6)).save(buf, format="PNG")
    small_png = buf.getvalue()
    # An ICO whose largest entry declares 13,000 x 13,000 (169 Mpx): Pillow's ICO decoder
    # would pick and decode that one, whatever the first entry says.
    huge = png_bytes(13_000, 13_000, 8, 2, b"\x00" * 64)
    (tmp_path / "icon.png").write_bytes(ico_bytes([(64, 48, small_png), (0, 0, huge)]))
    (tmp_path / "small_icon.png").write_bytes(ico_bytes([(64, 48, small_png)]))
    Image.fromarray(photo(7)).save(tmp_path / "a_png.jpg", format="PNG")
    Image.fromarray(photo(8)).save(tmp_path / "a_jpeg.webp", format="JPEG")
    Image.fromarray(photo(9)).save(tmp_path / "a_tga.bmp", format="TGA")
    eps_file(tmp_path / "page.tif")
    expected = {
        "icon.png": "cannot decode: not a PNG file (the extension says .png)",
        "small_icon.png": "cannot decode: not a PNG file (the extension says .png)",
        "a_png.jpg": "cannot decode: not a JPEG file (the extension says .jpg; it is a PNG file)",
        "a_jpeg.webp": "cannot decode: not a WEBP file (the extension says .webp; it is a JPEG "
        "file)",
        "a_tga.bmp": "cannot decode: not a BMP file (the extension says .bmp)",
        "page.tif": "cannot decode: not a TIFF file (the extension says .tif)",
    }
    for name, reason in expected.items():
        image, record = load(tmp_path / name)
        assert (image, record.accepted, record.reason) == (None, False, reason), name


def test_an_extension_is_read_after_the_leading_dots_of_a_name(tmp_path):
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    for name in ("..png", "...png", ".png"):
        write_image(tmp_path / name, photo(11), format="PNG")
    assert load_source(fs, root, "..png", SIZE, 0.995)[1].accepted
    assert load_source(fs, root, "...png", SIZE, 0.995)[1].accepted
    assert load_source(fs, root, ".png", SIZE, 0.995)[1].reason == "not an image file extension"


# -- 3. every size is checked before a pixel is decoded -----------------------------------------
def huge_headers(w: int, h: int) -> dict[str, bytes]:
    """Files of each allowed format whose header declares ``w x h``, with next to no data."""
    out = {"huge.png": png_bytes(w, h, 8, 2, b"\x00" * 64)}
    buf = io.BytesIO()
    Image.fromarray(photo(12)).save(buf, format="JPEG")
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    out["huge.jpg"] = bytes(jpeg)
    screen = struct.pack("<HHBBB", w, h, 0xF0, 0, 0) + b"\x00" * 6  # 2-colour global palette
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    out["huge.gif"] = b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    out["huge.bmp"] = b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\x00" * 64
    out["huge.tif"] = _tiff_header(w, h)
    buf = io.BytesIO()  # a real lossless WebP, its VP8L size fields (14 bits each) patched
    Image.fromarray(photo(12)).save(buf, format="WEBP", lossless=True)
    webp = bytearray(buf.getvalue())
    assert webp[12:16] == b"VP8L" and webp[20] == 0x2F
    (bits,) = struct.unpack("<I", webp[21:25])
    bits = (bits & ~((1 << 28) - 1)) | (w - 1) | ((h - 1) << 14)
    webp[21:25] = struct.pack("<I", bits)
    out["huge.webp"] = bytes(webp)
    return out


def _tiff_header(w: int, h: int) -> bytes:
    tags = [
        (256, 4, 1, w),  # ImageWidth
        (257, 4, 1, h),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample (one value: 8 for every sample)
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, 200),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 4, 1, h),  # RowsPerStrip
        (279, 4, 1, 64),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    body = b"II*\x00" + struct.pack("<I", 8) + ifd
    return body + b"\x00" * (264 - len(body))


@pytest.mark.parametrize("name", ["huge.png", "huge.jpg", "huge.gif", "huge.bmp", "huge.tif",
                                  "huge.webp"])  # fmt: skip
def test_a_header_declaring_too_many_pixels_is_rejected_before_decoding(name, tmp_path):
    w, h = 16_000, 16_000  # 256 Mpx: 2.8 GB to decode
    path = tmp_path / name
    path.write_bytes(huge_headers(w, h)[name])
    with pytest.raises((TooManyPixelsError, Image.DecompressionBombError)):
        decode_rgb(str(path))
    image, record = load(path)
    assert image is None
    assert record.reason.startswith(f"too many pixels: more than {MAX_PIXELS}"), record.reason
    small = tmp_path / f"small{path.suffix}"  # the same file at 40 x 30: read as declared
    small.write_bytes(huge_headers(40, 30)[name])
    with Image.open(small) as img:
        assert img.size == (40, 30)


# -- 4. decoding bounded in time and memory ---------------------------------------------------
def scan_bomb(repeats: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: each scan is a pass over all pixels."""
    buf = io.BytesIO()
    Image.fromarray(photo(13, 64, 96)).save(buf, format="JPEG", progressive=True)
    data = buf.getvalue()
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * repeats + data[end:]


def test_a_jpeg_of_too_many_scans_is_rejected_unread(tmp_path):
    from pupsnr_dask.kernels.image import jpeg_scan_count

    normal = scan_bomb(0)
    assert jpeg_scan_count(normal) == 10  # libjpeg's progressive script
    (tmp_path / "ok.jpg").write_bytes(scan_bomb(490))
    assert load(tmp_path / "ok.jpg")[1].accepted
    (tmp_path / "bomb.jpg").write_bytes(scan_bomb(3_500))
    image, record = load(tmp_path / "bomb.jpg")
    assert image is None
    assert record.reason == "cannot decode: 3510 JPEG scans, more than 500 (a decoding bomb?)"
    # Not counted: the bytes of a comment, or the pictures after the first of an MPO file.
    mpo = tmp_path / "multi.jpg"
    frames = [Image.fromarray(photo(k)) for k in range(4)]
    frames[0].save(mpo, format="MPO", save_all=True, append_images=frames[1:], progressive=True)
    assert jpeg_scan_count(mpo.read_bytes()) == 10
    commented = io.BytesIO()
    frames[0].save(commented, format="JPEG", comment=b"\xff\xda" * 600)
    assert jpeg_scan_count(commented.getvalue()) == 1


def test_a_decode_needing_more_memory_than_the_budget_is_rejected_undecoded(tmp_path):
    from pupsnr_dask.kernels.image import decode_bytes

    path = tmp_path / "big.png"
    Image.fromarray(photo(14, 600, 800)).save(path)  # 480,000 pixels, RGB
    need = 480_000 * (4 + 4 + 3)
    with Image.open(path) as img:
        assert decode_bytes(img) == need
    image, record = load(path, max_bytes=need - 1)
    assert image is None
    assert record.reason == "cannot decode: would need 6 MB to decode, more than the 5 MB limit"
    assert load(path, max_bytes=need)[1].accepted
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = tmp_path / "turned.png"  # EXIF orientation: exif_transpose copies the image
    Image.fromarray(photo(14, 600, 800)).save(turned, exif=exif)
    assert load(turned, max_bytes=need)[1].reason.startswith("cannot decode: would need 8 MB")
    assert load(turned, max_bytes=need + 480_000 * 4)[1].accepted


def test_on_a_worker_the_budget_is_half_its_memory_limit(tmp_path):
    """A real worker process with a 1 GB limit rejects a 48 Mpx PNG instead of dying on it."""
    from distributed import Client, LocalCluster

    src = tmp_path / "src"
    src.mkdir()
    (src / "wide.png").write_bytes(_zeros_png(8_000, 6_000))  # 48 Mpx: ~530 MB to decode
    write_image(src / "ok.png", photo(15))
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="1GB", host="127.0.0.1",
                     dashboard_address=":0") as cluster,
        Client(cluster),
    ):  # fmt: skip
        ingest(str(src), str(tmp_path / "d.zarr"), size=SIZE, progress=False)
    ds = xr.open_zarr(tmp_path / "d.zarr")
    assert ds["source"].values.tolist() == ["ok.png"]
    assert schema.json_attr(ds.attrs, "rejected")[0]["reason"] == (
        "cannot decode: would need 528 MB to decode, more than the 500 MB limit"
    )


def _zeros_png(w: int, h: int) -> bytes:
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * w)
    data = b"".join(compressor.compress(row) for _ in range(h)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    from badfiles import png_chunk

    sig = b"\x89PNG\r\n\x1a\n"
    return sig + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


# -- 1. credentials: never written, never shown ---------------------------------------------
SECRET_KEY_ID, SECRET = "AKIAUNTRUSTEDKEY0003", "untrusted-secret-4f2a9c7e"
NESTED_SECRET = "nested-secret-b81d6a"
SECRETS = (SECRET_KEY_ID, SECRET, NESTED_SECRET)


def test_command_lines_are_recorded_with_their_credentials_hidden():
    options = json.dumps({"endpoint_url": "http://127.0.0.1:9", "key": "K", "secret": "S",
                          "client_kwargs": {"aws_session_token": "T"}})  # fmt: skip
    hidden = json.dumps({"endpoint_url": "http://127.0.0.1:9", "key": "***", "secret": "***",
                         "client_kwargs": {"aws_session_token": "***"}})  # fmt: skip
    argv = ["pupsnr", "run", "s3://b/d.zarr", "--storage-options", options, "-q"]
    assert redact_argv(argv) == [*argv[:4], hidden, "-q"]
    assert redact_argv(["x", f"--storage-options={options}"]) == [
        "x",
        f"--storage-options={hidden}",
    ]
    assert redact_argv(["x", "--storage-options", '{"secret": "S", ']) == [
        "x",
        "--storage-options",
        "***",
    ]  # not JSON: hidden whole
    assert redact_argv(["x", options]) == ["x", hidden]  # a JSON object anywhere
    assert redact_argv(["x", "aws_secret_access_key=S", "size=3"]) == [
        "x",
        "aws_secret_access_key=***",
        "size=3",
    ]
    assert redact_argv(["x", "ftp://me:S@host/d.zarr"]) == ["x", "ftp://me:***@host/d.zarr"]


def killed(
    argv: list[str], point: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess:
    """Run ``argv`` in a session of its own until the kill point SIGKILLs it (and its workers)."""
    env = killhook.env(env, **{killhook.KILL_AT_ENV: point})
    proc = subprocess.run(argv, env=env, cwd=cwd, start_new_session=True, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.stderr[-2000:]}"
    return proc


def pupsnr(*args: str) -> list[str]:
    return [sys.executable, "-m", "pupsnr_dask", *args]


def test_a_local_lock_file_is_private_and_hides_the_credentials_in_its_command(tmp_path):
    src = tmp_path / "src"
    for k in range(4):
        write_image(src / f"img{k}.png", photo(20 + k))
    options = json.dumps({"auto_mkdir": True, "secret": SECRET,
                          "client_kwargs": {"aws_secret_access_key": NESTED_SECRET}})  # fmt: skip
    store = f"file://{tmp_path}/d.zarr"
    args = ["ingest", str(src), "-o", store, "--size", str(SIZE), "--chunk-size", "2"]
    args += ["--storage-options", options, "--n-workers", "1", "-q"]
    killed(pupsnr(*args), "ingest:batch:0", dict(os.environ), tmp_path)
    lock = tmp_path / "d.zarr.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600  # the command is readable by its owner only
    holder = json.loads(lock.read_text())
    assert '"secret": "***"' in holder["command"] and "aws_secret_access_key" in holder["command"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            for secret in SECRETS:
                assert secret.encode() not in path.read_bytes(), f"{secret} written to {path}"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a random port); yields its endpoint and an s3fs client."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        fs = S3FileSystem(endpoint_url=endpoint, key="test", secret="test",
                          use_listings_cache=False)  # fmt: skip
        yield endpoint, fs
    finally:
        server.stop()


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No AWS configuration: the only credentials are the storage options of the command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PUPSNR_"))}
    (tmp_path / "aws").mkdir(exist_ok=True)
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "aws" / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws" / "credentials"),
        AWS_DEFAULT_REGION="us-east-1",
        DASK_TEMPORARY_DIRECTORY=str(tmp_path / "scratch"),  # worker files: checked too
    )
    return env


def test_no_credential_is_written_or_shown_by_any_command_on_s3_even_when_killed(moto, tmp_path):
    """The real CLI on a real cluster (scheduler and worker processes, their logs in files)."""
    from clusters import process_cluster

    endpoint, fs = moto
    bucket = "untrusted-creds"
    fs.mkdir(bucket)
    for k in range(6):
        write_image(tmp_path / "src" / f"img{k}.png", photo(30 + k))
    fs.put(f"{tmp_path / 'src'}/", f"{bucket}/src/", recursive=True)
    options = json.dumps({"endpoint_url": endpoint, "key": SECRET_KEY_ID, "secret": SECRET,
                          "client_kwargs": {"region_name": "us-east-1"},
                          "config_kwargs": {"proxies": {"https": f"http://u:{NESTED_SECRET}@h"}}
                          })  # fmt: skip
    env = clean_env(tmp_path)
    store, results = f"s3://{bucket}/d.zarr", f"s3://{bucket}/r.zarr"
    with process_cluster(tmp_path / "cluster", n_workers=1) as cluster:
        so = ["--storage-options", options, "--scheduler", cluster.address, "-q"]
        ingest_args = ["ingest", f"s3://{bucket}/src", "-o", store, "--size", str(SIZE)]
        ingest_args += ["--chunk-size", "2", *so]
        run_args = ["run", store, "-o", results, "--scales", "1,2,4", *so]
        outputs = [killed(pupsnr(*ingest_args), "ingest:staged", env, tmp_path)]
        assert fs.exists(f"{bucket}/d.zarr.lock")  # left by the killed writer, in the bucket
        assert_nothing_holds_a_secret(fs, bucket, tmp_path, outputs)
        outputs.append(finished(ingest_args, env, tmp_path))
        assert "took over the lock of a process that died" in outputs[-1].stdout
        outputs.append(killed(pupsnr(*run_args), "run:created", env, tmp_path))
        assert fs.exists(f"{bucket}/r.zarr.lock")
        outputs.append(finished(run_args, env, tmp_path))
        html = tmp_path / "report.html"
        outputs.append(finished(["report", results, "--html", str(html), *so[:2], "-q"], env,
                                tmp_path))  # fmt: skip
        assert "images store" in html.read_text()
        env_options = {**env, "PUPSNR_STORAGE_OPTIONS": options}  # the other way to give them
        outputs.append(finished(["verify", results, "--scheduler", cluster.address, "-q"],
                                env_options, tmp_path))  # fmt: skip
        # A task failing on the worker: the worker logs it with its arguments.
        fs.pipe_file(f"{bucket}/d.zarr/images/c/0/0/0/0", b"\x28\xb5\x2f\xfd" + b"garbage" * 9)
        broken = subprocess.run(pupsnr("run", store, "-o", f"s3://{bucket}/r2.zarr", *so),
                                env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert broken.returncode == 2, broken.stderr[-3000:]
        outputs.append(broken)
        logs = (tmp_path / "cluster" / "worker-0.log").read_text()
        assert "Compute Failed" in logs
    assert_nothing_holds_a_secret(fs, bucket, tmp_path, outputs)


def finished(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(pupsnr(*args), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def assert_nothing_holds_a_secret(fs, bucket: str, local: Path, outputs) -> None:
    """No secret in any object of the bucket, any file below ``local``, any output."""
    objects = fs.find(bucket)
    assert any(p.endswith("zarr.json") for p in objects) or any(
        p.endswith(".lock") for p in objects
    )
    for path in objects:
        content = fs.cat_file(path)
        for secret in SECRETS:
            assert secret.encode() not in content, f"{secret} written to s3://{path}"
    for path in local.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in content, f"{secret} written to {path}"
    for proc in outputs:
        for secret in SECRETS:
            assert secret not in proc.stdout + proc.stderr, f"{secret} shown by {proc.args[3:5]}"


# -- 6. a lock file that a failed write left empty or broken ------------------------------------
FULL_DISK_LOCK = """
import resource, signal, sys
from pupsnr_dask.store.lock import StoreLock
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    StoreLock(sys.argv[1]).__enter__()
except OSError as err:
    print("refused:", err.strerror)
else:
    print("locked")
"""


@pytest.mark.parametrize("room", [0, 20])
def test_a_lock_that_cannot_be_written_leaves_no_lock_file_behind(room, tmp_path):
    """No room for the holder (a full disk): the writer fails, and no lock file stays."""
    store = tmp_path / "d.zarr"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_LOCK, str(store), str(room)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.stdout.strip() == "refused: File too large", proc.stderr
    assert not Path(lock_path(str(store))).exists()
    with StoreLock(str(store)) as lock:  # and the next writer goes ahead
        assert lock.taken_over is None


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b"\xff\xfe garbage"])
def test_an_empty_or_broken_lock_file_on_s3_is_taken_over(content, moto):
    endpoint, fs = moto
    bucket = "untrusted-locks"
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.pipe_file(f"{bucket}/d.zarr.lock", content)
    url = f"s3://{bucket}/d.zarr"
    options = {"endpoint_url": endpoint, "key": "test", "secret": "test"}
    with StoreLock(url, options) as lock:
        assert lock.taken_over == UNREADABLE_HOLDER
        assert describe(lock.taken_over) == ("a process that left an empty or unreadable lock file")
        assert json.loads(fs.cat_file(f"{bucket}/d.zarr.lock"))["pid"] == os.getpid()
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"), StoreLock(url, options):
            pass
    assert not fs.exists(f"{bucket}/d.zarr.lock")


def test_an_empty_lock_file_on_local_disk_does_not_block_a_writer(tmp_path):
    store = tmp_path / "d.zarr"
    Path(lock_path(str(store))).write_bytes(b"")
    with StoreLock(str(store)):
        pass
    assert not Path(lock_path(str(store))).exists()


# -- 5. strings from the data are text: escaped in HTML, never mathtext in plots ---------------
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def hostile_stores(tmp_path_factory):
    """A real images store and results store of files named with markup and with ``$``."""
    root = tmp_path_factory.mktemp("hostile")
    names = ["<img src=x onerror=alert(1)>.png", "a$\\foo$b.png", "plain.png"]
    for k, name in enumerate(names):
        write_image(root / "src" / name, photo(40 + k))
    with dask.config.set(scheduler="sync"):
        ingest(str(root / "src"), str(root / "d.zarr"), size=SIZE, progress=False)
        run(str(root / "d.zarr"), str(root / "r.zarr"), scales=[1, 2], progress=False)
    return root


def test_every_string_from_a_store_is_escaped_in_the_html_report(hostile_stores):
    results = xr.open_zarr(hostile_stores / "r.zarr").load()
    images = xr.open_zarr(hostile_stores / "d.zarr")
    results.attrs["mse_definition"] = HOSTILE  # "method" and variants are checked: known ones
    results.attrs["images_store_attrs"] = {"src": HOSTILE, HOSTILE: "value"}
    images.attrs["src"] = HOSTILE
    names = {"results_name": HOSTILE, "images_name": HOSTILE, "images_note": HOSTILE}
    page = html_report.build_html(results, images, progress=False, **names)
    page += html_report.build_html(results, None, progress=False, **names)  # no pictures
    assert "<script" not in page.lower() and "<img src=x" not in page
    escaped = (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;",
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;",
    )
    assert sum(page.count(e) for e in escaped) >= 10  # html.escape or jinja2's (markupsafe) quotes
    crafted = results.assign_coords(variant=[HOSTILE, "gray", "mosaic"])
    with pytest.raises(schema.StoreError, match="unknown variant"):
        html_report.build_html(crafted, None, progress=False, **names)  # damaged: no page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page


def drawn(text) -> str:
    """What matplotlib draws of a Text: its characters, or an error when it would be mathtext."""
    shown, math = text._preprocess_math(text.get_text())
    assert not math, f"drawn as mathtext: {text.get_text()!r}"
    return shown


def test_file_names_with_dollars_are_drawn_as_they_are(hostile_stores, tmp_path):
    store = str(hostile_stores / "d.zarr")
    assert main(["grid", store, "--image", "a$\\foo$b.png", "-o", str(tmp_path / "g.png")]) == 0
    cells = grid.pu_grid(open_store(store, "images"), "a$\\foo$b.png", ["true"], [1, 2])
    fig = plots.grid_figure(cells)
    plots.png_bytes(fig)  # drawn without a mathtext error
    title = drawn(fig._suptitle)
    assert title == f"PU transform of image {cells.attrs['image']}: a$\\foo$b.png"
    cube = xr.open_zarr(hostile_stores / "r.zarr").load()
    cube = cube.assign_coords(variant=["$\\foo$", "gr$ay", "mosaic"])
    fig = plots.psnr_figure(cube, title="PSNR of $x$ and $\\bar$")
    plots.png_bytes(fig)
    assert drawn(fig._suptitle) == "PSNR of $x$ and $\\bar$"
    legends = [drawn(t) for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "$\\foo$" in legends and "gr$ay" in legends


def test_advise_decodes_predictions_as_ingest_does_and_draws_names_as_they_are(
    hostile_stores, tmp_path
):
    from pupsnr_dask.advise import advise_depths
    from pupsnr_dask.report.advice_plot import plot_advice

    marker = fake_ghostscript(tmp_path / "bin")
    pred = tmp_path / "pred"
    truth = xr.open_zarr(hostile_stores / "d.zarr")
    for source, pixels in zip(truth["source"].values, truth["images"].values, strict=True):
        write_image(pred / str(source), pixels)
    eps_file(pred / "plain.png")  # PostScript where a prediction should be
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    args = ["advise", str(hostile_stores / "r.zarr"), "--predictions", str(pred), "--variant"]
    args += ["gray", "--format", "csv", "--n-workers", "1", "-q"]
    proc = subprocess.run(pupsnr(*args), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), f"Ghostscript was run: {marker.read_text()}"
    assert "plain.png: cannot decode: not a PNG file (the extension says .png)" in proc.stderr
    ds = advise_depths(str(hostile_stores / "r.zarr"), output_psnr=30.0, variant="gray")
    ds.attrs["conclusion"] = "costs $5 and $\\foo$"
    fig = plot_advice(ds)
    plots.png_bytes(fig)
    assert "costs $5 and $\\foo$" in drawn(fig._supxlabel)
