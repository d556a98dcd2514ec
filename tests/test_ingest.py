from __future__ import annotations

import math
import warnings

import dask
import numpy as np
import pytest
import reference
import xarray as xr
from conftest import random_photo, write_image
from PIL import Image

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import open_images
from pupsnr_dask.ingest import assign_split, list_files
from pupsnr_dask.kernels.image import color_score, decode_rgb, load_resized
from pupsnr_dask.schema import json_attr


def test_store_layout(images_store):
    ds = xr.open_zarr(images_store)
    assert ds["images"].dims == ("image", "y", "x", "channel")
    assert ds["images"].dtype == np.uint8
    assert ds["images"].shape[1:] == (256, 256, 3)
    assert ds["images"].encoding["chunks"] == (5, 256, 256, 3)
    for coord in ("source", "color_score", "split", "original_width", "original_height"):
        assert ds[coord].dims == ("image",)
    assert set(ds["split"].values) == {"train"}
    assert ds.attrs["pupsnr_kind"] == "images"
    assert ds.attrs["size"] == 256 and ds.attrs["threshold"] == 0.995
    assert "pupsnr_version" in ds.attrs
    open_images(str(images_store))  # validates


def test_store_equals_the_reference_loop(images_store, sample_dir):
    ds = xr.open_zarr(images_store)
    stored = dict(zip(ds["source"].values, range(ds.sizes["image"]), strict=True))
    rejected = {r["source"]: r["reason"] for r in json_attr(ds.attrs, "rejected")}
    files = sorted(p for p in sample_dir.rglob("*") if p.is_file())
    assert len(files) == len(stored) + len(rejected) == ds.attrs["n_files"]
    for path in files:
        rel = path.relative_to(sample_dir).as_posix()
        rgb = reference.load_rgb(path)
        colour, score = reference.is_colour(rgb)
        if colour:
            i = stored[rel]
            np.testing.assert_array_equal(ds["images"][i].values, reference.img_true(rgb))
            assert ds["color_score"].values[i] == pytest.approx(score, abs=1e-12)
            assert (ds["original_width"].values[i], ds["original_height"].values[i]) == rgb.size
        else:
            assert rel in rejected and rejected[rel].startswith("not colour")
    assert list(ds["source"].values) == sorted(stored)  # file order


def test_sample_set_has_both_colour_and_gray_photos(images_store):
    ds = xr.open_zarr(images_store)
    assert ds.sizes["image"] >= 10
    rejected = {r["source"] for r in json_attr(ds.attrs, "rejected")}
    assert {"skimage/camera.png", "skimage/moon.png"} <= rejected


def test_color_score_matches_corrcoef(sample_dir):
    for path in sorted(sample_dir.rglob("*.*")):
        rgb = reference.load_rgb(path)
        _, expected = reference.is_colour(rgb)
        got = color_score(np.asarray(rgb))
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12)


def test_gray_saved_as_rgb_is_rejected(tmp_path):
    g = random_photo(np.random.default_rng(0), 40, 50)[..., :1].repeat(3, axis=2)
    path = write_image(tmp_path / "g.png", g)
    image, record = load_resized(str(path), "g.png", 256, 0.995)
    assert image is None and record.reason.startswith("not colour")
    assert record.color_score == pytest.approx(1.0)


def test_constant_channel_is_rejected_without_nan_warning(tmp_path):
    img = random_photo(np.random.default_rng(1), 30, 30)
    img[..., 1] = 77
    path = write_image(tmp_path / "c.png", img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, record = load_resized(str(path), "c.png", 256, 0.995)
    assert image is None and "constant" in record.reason and math.isnan(record.color_score)


@pytest.mark.parametrize(
    ("mode", "ext", "kwargs"),
    [
        ("P", ".png", {}),
        ("RGBA", ".png", {}),
        ("CMYK", ".jpg", {"quality": 95}),
        ("RGB", ".webp", {"lossless": True}),
        ("RGB", ".bmp", {}),
        ("RGB", ".tiff", {}),
        ("P", ".gif", {}),
    ],
)
def test_other_modes_are_converted_like_pillow_convert_rgb(tmp_path, mode, ext, kwargs):
    rgb = Image.fromarray(random_photo(np.random.default_rng(2), 48, 64))
    src = rgb.convert(mode) if mode != "P" else rgb.quantize(64)
    path = tmp_path / f"img{ext}"
    src.save(path, **kwargs)
    image, record = load_resized(str(path), path.name, 32, 0.995)
    assert record.accepted, record
    expected = np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.LANCZOS))
    np.testing.assert_array_equal(image, expected)
    assert (record.width, record.height) == (64, 48)


def test_16_bit_grayscale_png_is_rejected_as_not_colour(tmp_path):
    arr = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    image, record = load_resized(str(path), "deep.png", 32, 0.995)
    assert image is None and record.reason.startswith("not colour")


def test_first_frame_of_animated_gif(tmp_path):
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(random_photo(rng, 32, 32)).quantize(32) for _ in range(3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(
        np.asarray(decode_rgb(str(path))), np.asarray(frames[0].convert("RGB"))
    )


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", [None, *range(1, 9)])
def test_decode_equals_exif_transpose_then_convert_rgb(tmp_path, ext, orientation):
    """decode_rgb skips the copies of exif_transpose and convert("RGB") when they would only
    copy: the pixels must stay those of Pillow's full path, for every orientation tag."""
    from PIL import ImageOps

    rng = np.random.default_rng(orientation or 0)
    img = Image.fromarray(random_photo(rng, 24, 40))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    path = tmp_path / f"o{ext}"
    img.save(path, exif=exif, **({"lossless": True} if ext == ".webp" else {}))
    with Image.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    got = decode_rgb(str(path))
    assert got.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(got), expected)
    turned = orientation in (5, 6, 7, 8)
    assert got.size == ((24, 40) if turned else (40, 24))
    image, record = load_resized(str(path), path.name, 16, 0.995)
    resized = Image.fromarray(expected).resize((16, 16), Image.LANCZOS)
    np.testing.assert_array_equal(image, np.asarray(resized))
    assert record.color_score == color_score(expected)


def test_first_frame_of_animated_rgb_png_and_webp(tmp_path):
    rng = np.random.default_rng(5)
    frames = [Image.fromarray(random_photo(rng, 32, 32)) for _ in range(3)]
    for ext, kwargs in ((".png", {}), (".webp", {"lossless": True})):
        path = tmp_path / f"anim{ext}"
        frames[0].save(path, save_all=True, append_images=frames[1:], **kwargs)
        image, record = load_resized(str(path), path.name, 16, 0.995)
        assert record.accepted, record
        np.testing.assert_array_equal(image, np.asarray(frames[0].resize((16, 16), Image.LANCZOS)))


def test_list_files_is_sorted_relative_posix(tmp_path):
    for rel in ("b/z.png", "a.png", "b/a b.jpg", "c/d/e.gif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_files(str(tmp_path)) == ["a.png", "b/a b.jpg", "b/z.png", "c/d/e.gif"]


def test_split_is_deterministic_and_sized():
    sources = [f"img{i:03d}.png" for i in range(50)]
    a = assign_split(sources, 7)
    assert (a == "test").sum() == 7
    assert np.array_equal(a, assign_split(list(sources), 7))
    with pytest.raises(ValueError, match="test_count"):
        assign_split(sources, 51)


def test_rejections_are_listed_and_ingest_is_parallel_safe(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    for i in range(9):
        write_image(src / f"c{i}.png", random_photo(rng, 40 + i, 50))
    write_image(src / "gray.png", random_photo(rng, 40, 40)[..., 0])
    (src / "broken.jpg").write_bytes(b"not a jpeg at all")
    (src / "notes.txt").write_text("hello")
    stores = []
    for chunk, scheduler in ((2, "threads"), (4, "processes"), (32, "sync")):
        store = tmp_path / f"s{chunk}.zarr"
        with dask.config.set(scheduler=scheduler):
            summary = ingest(str(src), str(store), chunk_size=chunk, test_count=3, progress=False)
        assert (summary.n_files, summary.n_images) == (12, 9)
        stores.append(xr.open_zarr(store).load())
        assert not (tmp_path / f"s{chunk}.zarr.partial").exists()
    reasons = {r["source"]: r["reason"] for r in json_attr(stores[0].attrs, "rejected")}
    assert reasons["gray.png"].startswith("not colour")
    assert reasons["broken.jpg"].startswith("cannot decode")
    assert reasons["notes.txt"] == "not an image file extension"
    for other in stores[1:]:
        xr.testing.assert_identical(stores[0].drop_attrs(), other.drop_attrs())
    assert (stores[0]["split"] == "test").sum() == 3


def test_refuses_existing_store_missing_and_empty_src(tmp_path, sample_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest(str(tmp_path / "nope"), str(tmp_path / "x.zarr"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no files"):
        ingest(str(tmp_path / "empty"), str(tmp_path / "x.zarr"))
    (tmp_path / "exists.zarr").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        ingest(str(sample_dir), str(tmp_path / "exists.zarr"))
    gray_only = tmp_path / "grays"
    write_image(gray_only / "g.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="no colour images"):
        ingest(str(gray_only), str(tmp_path / "y.zarr"), progress=False)


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_an_archive_is_ingested_in_place_like_its_folder(tmp_path, sample_dir, images_store, kind):
    """SRC may be a .zip/.tar/.tar.gz (read through fsspec's zip:// and tar://, not unpacked):
    the store equals the folder's, member paths as ``source``, the archive's path as ``src``."""
    import tarfile
    import zipfile

    members = sorted(p for p in sample_dir.rglob("*") if p.is_file())
    archive = tmp_path / f"photos.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for p in members:
                zf.write(p, p.relative_to(sample_dir).as_posix())
    else:
        with tarfile.open(archive, "w:gz" if kind.endswith("gz") else "w") as tf:
            for p in members:
                tf.add(p, p.relative_to(sample_dir).as_posix())
    store = tmp_path / "a.zarr"
    with dask.config.set(scheduler="sync"):
        summary = ingest(str(archive), str(store), chunk_size=5, progress=False)
        again = ingest(str(archive), str(store), chunk_size=5, progress=False)
    got, want = xr.open_zarr(store).load(), xr.open_zarr(images_store).load()
    xr.testing.assert_identical(got.drop_attrs(), want.drop_attrs())
    assert got.attrs["src"] == str(archive)
    assert {k: v for k, v in got.attrs.items() if k != "src"} == {
        k: v for k, v in want.attrs.items() if k != "src"
    }
    assert summary.n_files == len(members) and again.n_files == 0


def test_pupsnr_ingest_takes_a_zip_archive_as_src(tmp_path, sample_dir, images_store, monkeypatch):
    """The command line passes an archive through: `pupsnr ingest photos.zip -o data.zarr`."""
    import zipfile

    from pupsnr_dask.cli import main

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(p for p in sample_dir.rglob("*") if p.is_file()):
            zf.write(p, p.relative_to(sample_dir).as_posix())
    monkeypatch.chdir(tmp_path)  # a relative SRC and STORE, as a user types them
    argv = ["ingest", "photos.zip", "-o", "data.zarr", "--chunk-size", "5", "-q", "--threads"]
    assert main([*argv, "--n-workers", "2"]) == 0
    got, want = xr.open_zarr(tmp_path / "data.zarr").load(), xr.open_zarr(images_store).load()
    xr.testing.assert_identical(got.drop_attrs(), want.drop_attrs())
    assert got.attrs["src"] == str(archive)


def test_the_progress_bar_says_what_it_measures(tmp_path, sample_dir, capsys):
    """Ingest's bar (and run's) has a label line above it; with progress off, nothing."""
    from pupsnr_dask import run_experiment

    with dask.config.set(scheduler="sync"):
        ingest(str(sample_dir), str(tmp_path / "d.zarr"), chunk_size=8, progress=True)
        run_experiment(str(tmp_path / "d.zarr"), str(tmp_path / "r.zarr"), progress=True)
    err = capsys.readouterr().err
    n = sum(1 for p in sample_dir.rglob("*") if p.is_file())
    assert f"pupsnr: decoding, colour-testing and resizing {n} files (" in err
    assert "pupsnr: computing and writing " in err and " result chunks" in err
    with dask.config.set(scheduler="sync"):
        ingest(str(sample_dir), str(tmp_path / "e.zarr"), chunk_size=8, progress=False)
    assert "pupsnr:" not in capsys.readouterr().err
