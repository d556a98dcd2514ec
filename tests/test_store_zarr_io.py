"""``store/zarr_io.py``: opening a store (its refusals, in order, and what is read at once),
creating one (checksums, CF attributes, JSON attributes, data written on compute), the regions
parallel writers own, and the link from a results store to its images store.

Real stores on disk: copies of the ingested sample photos and their results, or small ones
written here with zarr and xarray. The command-level cases (each damage stops each command,
attributes survive netCDF) are in ``test_damage.py``, ``test_verify.py`` and ``test_schema.py``.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil

import dask
import dask.array as da
import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import images_dataset
from hypothesis import given
from hypothesis import strategies as st
from zarr.codecs import Crc32cCodec, ZstdCodec

from pupsnr_dask import schema
from pupsnr_dask.cluster import compute
from pupsnr_dask.store import zarr_io
from pupsnr_dask.store.codecs import compressors
from pupsnr_dask.store.fs import partial_path
from pupsnr_dask.store.integrity import list_keys, missing_chunks
from pupsnr_dask.store.zarr_io import open_store

pytestmark = [
    pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part"),
    pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification"),
    pytest.mark.filterwarnings("ignore:Failed to open Zarr store with consolidated metadata"),
]

LABELS = ("source", "split", "color_score", "original_width", "original_height")


@pytest.fixture()
def images(images_store, tmp_path):
    """A fresh copy of the ingested sample photos (14 images, chunks of 5)."""
    shutil.copytree(images_store, tmp_path / "d.zarr")
    return tmp_path / "d.zarr"


@pytest.fixture()
def results(results_store, tmp_path):
    """A fresh copy of their results (psnr and mse in chunks of 5 images)."""
    shutil.copytree(results_store, tmp_path / "r.zarr")
    return tmp_path / "r.zarr"


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _refuse(dsk, keys, **kwargs):
    raise AssertionError("computed on the active scheduler")


# -- open_store: its refusals, cheapest first ------------------------------------------------
def test_open_store_refuses_an_unknown_kind(images):
    with pytest.raises(ValueError, match=r"kind must be one of \('images', 'psnr'\), got 'psnr2'"):
        open_store(str(images), "psnr2")


def test_open_store_of_nothing_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no store at"):
        open_store(str(tmp_path / "nothing.zarr"), "images")


def test_open_store_says_unfinished_before_anything_else(images, tmp_path):
    os.mkdir(partial_path(str(images)))  # a sound store, being extended
    with pytest.raises(schema.StoreError, match="is unfinished: "):
        open_store(str(images), "psnr")  # the wrong kind too: unfinished is said first
    new = str(tmp_path / "new.zarr")
    os.mkdir(partial_path(new))  # not written yet at all: unfinished, not missing
    with pytest.raises(schema.StoreError, match="is unfinished: "):
        open_store(new, "images")


def test_open_store_refuses_a_folder_without_zarr_metadata(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(schema.StoreError, match="is not a readable Zarr store: it has no Zarr"):
        open_store(str(tmp_path / "photos"), "images")


def test_open_store_refuses_the_other_kind(images, results):
    with pytest.raises(
        schema.StoreError, match="is a pupsnr 'images' store; expected a pupsnr 'psnr' store"
    ):
        open_store(str(images), "psnr")
    with pytest.raises(
        schema.StoreError, match="is a pupsnr 'psnr' store; expected a pupsnr 'images' store"
    ):
        open_store(str(results), "images")


def test_open_store_names_a_metadata_document_that_is_not_json(images):
    (images / "split/zarr.json").write_bytes(b'{"zarr_format": 3, "shape": [1')
    with pytest.raises(schema.StoreError) as raised:
        open_store(str(images), "images")
    assert str(raised.value).startswith(
        f"{str(images)!r} is damaged: metadata file 'split/zarr.json' is not valid JSON"
    )


def test_open_store_refuses_json_that_is_not_zarr(tmp_path):
    store = tmp_path / "odd.zarr"
    store.mkdir()
    (store / "zarr.json").write_text('{"zarr_format": 5}')  # a JSON object Zarr cannot read
    with pytest.raises(schema.StoreError, match=r"is not a readable Zarr store: .*zarr_format"):
        open_store(str(store), "images")


def test_open_store_counts_missing_chunks_and_names_the_first_three(results):
    os.remove(results / "psnr/c/1/0/0")
    with pytest.raises(schema.StoreError) as raised:
        open_store(str(results), "psnr")
    assert str(raised.value) == (
        f"{str(results)!r} is damaged: 1 chunks or metadata files are missing "
        "(psnr/c/1/0/0); `pupsnr verify` lists every defect"
    )
    for key in ("mse/c/0/0/0", "mse/c/2/0/0", "psnr/c/2/0/0"):
        os.remove(results / key)
    with pytest.raises(schema.StoreError) as raised:
        open_store(str(results), "psnr")
    assert (
        "4 chunks or metadata files are missing (mse/c/0/0/0, mse/c/2/0/0, psnr/c/1/0/0, ...)"
        in (str(raised.value))
    )


def test_open_store_checks_result_chunks_only_when_asked_to_verify(results):
    _flip(results / "psnr/c/1/0/0")
    open_store(str(results), "psnr")  # the data is not read
    with pytest.raises(schema.StoreError) as raised:
        open_store(str(results), "psnr", verify=True)
    assert str(raised.value) == (
        f"{str(results)!r}: chunk 'psnr/c/1/0/0' is damaged (checksum mismatch): "
        "`pupsnr verify` lists every defect"
    )


def test_open_store_verify_leaves_the_pixels_alone(images):
    _flip(images / "images/c/1/0/0/0")
    ds = open_store(str(images), "images", verify=True)
    assert ds.sizes["image"] == 14


def test_open_store_names_a_damaged_label_chunk_without_verify(images):
    _flip(images / "split/c/0")  # labels are read at once: damage is an error now
    with pytest.raises(schema.StoreError) as raised:
        open_store(str(images), "images")
    assert str(raised.value) == (
        f"{str(images)!r}: chunk 'split/c/0' is damaged (checksum mismatch): "
        "`pupsnr verify` lists every defect"
    )


# -- open_store: what it reads, and where ----------------------------------------------------
@pytest.mark.parametrize("lazy", [True, False])
def test_open_store_reads_the_labels_and_leaves_the_pixels_lazy(images, lazy):
    stored = zarr.open_group(str(images), mode="r")
    ds = open_store(str(images), "images", lazy=lazy)
    for name in LABELS:
        assert isinstance(ds[name].variable._data, np.ndarray), name  # in memory
        np.testing.assert_array_equal(ds[name].values, stored[name][:])
    pixels = ds["images"].variable._data
    assert not isinstance(pixels, np.ndarray)  # not read yet
    assert isinstance(pixels, da.Array) is lazy
    if lazy:
        assert ds["images"].chunks[0] == (5, 5, 4)
    np.testing.assert_array_equal(ds["images"][8:11].values, stored["images"][8:11])


def test_open_store_reads_labels_in_this_process_whatever_the_scheduler(results):
    with dask.config.set(scheduler=_refuse):
        ds = open_store(str(results), "psnr")
        assert list(ds["split"].values) == ["train"] * 14
        with pytest.raises(AssertionError, match="computed on the active scheduler"):
            ds["psnr"].load()  # the data does go to the active scheduler


# -- create_store ----------------------------------------------------------------------------
def _pixels(n: int = 5, size: int = 8) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_create_store_writes_metadata_now_and_dask_data_on_compute(tmp_path):
    pixels = _pixels()
    store = str(tmp_path / "new.zarr")
    write = zarr_io.create_store(images_dataset(pixels, chunk=2), store)
    keys = list_keys(store)
    assert "images/zarr.json" in keys and "source/c/0" in keys  # in-memory labels: written
    assert not [k for k in keys if k.startswith("images/c/")]  # the pixels: not yet
    with dask.config.set(scheduler="sync"):
        compute(write, progress=False)
    np.testing.assert_array_equal(zarr.open_array(f"{store}/images", mode="r")[:], pixels)
    assert missing_chunks(store) == []
    np.testing.assert_array_equal(open_store(store, "images")["images"].values, pixels)


def test_create_store_writes_every_chunk_even_one_of_fill_values(tmp_path):
    pixels = np.zeros((4, 8, 8, 3), np.uint8)  # all fill value: Zarr would skip them
    store = str(tmp_path / "zeros.zarr")
    with dask.config.set(scheduler="sync"):
        compute(zarr_io.create_store(images_dataset(pixels, chunk=2), store), progress=False)
    assert {"images/c/0/0/0/0", "images/c/1/0/0/0"} <= list_keys(store)
    assert missing_chunks(store) == []


def test_create_store_checksums_every_array_and_keeps_the_callers_encoding(tmp_path):
    ds = images_dataset(_pixels(), chunk=5)
    ds["images"].encoding = {"compressors": (ZstdCodec(level=7),)}  # no checksum
    own = (ZstdCodec(level=9), Crc32cCodec())
    ds["color_score"].encoding = {"compressors": own}  # ends with one: kept as given
    store = str(tmp_path / "new.zarr")
    with dask.config.set(scheduler="sync"):
        compute(zarr_io.create_store(ds, store), progress=False)
    assert ds["images"].encoding == {"compressors": (ZstdCodec(level=7),)}
    group = zarr.open_group(store, mode="r")
    for name, arr in group.arrays():
        assert arr.metadata.codecs[-1].to_dict()["name"] == "crc32c", name
    ours = compressors()[0].to_dict()["configuration"]["level"]  # replaced: pupsnr's level
    assert group["images"].metadata.codecs[1].to_dict()["configuration"]["level"] == ours != 7
    assert group["color_score"].metadata.codecs[1].to_dict()["configuration"]["level"] == 9


def test_create_store_adds_cf_attributes_and_writes_nested_attributes_as_json(tmp_path):
    ds = images_dataset(_pixels(), chunk=5)
    ds["source"].attrs = {"long_name": "mine", "note": "kept"}
    ds.attrs.update(rejected=[{"source": "a.png", "reason": "grey"}], params={"size": 8}, n=3)
    store = str(tmp_path / "new.zarr")
    with dask.config.set(scheduler="sync"):
        compute(zarr_io.create_store(ds, store), progress=False)
    group = zarr.open_group(store, mode="r")
    source = dict(group["source"].attrs)
    assert source["long_name"] == schema.VARIABLE_ATTRS["source"]["long_name"]  # replaced
    assert source["description"] == schema.VARIABLE_ATTRS["source"]["description"]
    assert source["note"] == "kept"
    assert group.attrs["rejected"] == '[{"source": "a.png", "reason": "grey"}]'
    assert json.loads(group.attrs["params"]) == {"size": 8}
    assert group.attrs["n"] == 3


def test_create_store_never_overwrites_a_store(images):
    before = {k: (images / k).read_bytes() for k in list_keys(str(images))}
    with pytest.raises(Exception, match=r"(?i)exist|contains"):
        zarr_io.create_store(images_dataset(_pixels(), chunk=5), str(images))
    assert {k: (images / k).read_bytes() for k in list_keys(str(images))} == before


# -- regions of parallel writers -------------------------------------------------------------
def test_align_to_shards_rechunks_only_misaligned_dimensions_of_sharded_variables():
    values = np.arange(10 * 8).reshape(10, 8)
    blocks = da.from_array(values, chunks=((3, 3, 3, 1), (4, 4)))
    sharded = xr.Variable(("i", "j"), blocks, encoding={"chunks": (2, 2), "shards": (6, 2)})
    plain = xr.Variable(("i", "j"), blocks)
    aligned_already = xr.Variable(
        ("i", "j"), da.from_array(values, chunks=(6, 4)), encoding={"shards": (6, 2)}
    )
    in_memory = xr.Variable(("i", "j"), values, encoding={"shards": (6, 2)})
    ds = xr.Dataset({"s": sharded, "p": plain, "a": aligned_already, "m": in_memory})
    out = zarr_io.align_to_shards(ds)
    assert out["s"].chunks == ((6, 4), (4, 4))  # i at shard edges; j edges already on them
    assert ds["s"].chunks == ((3, 3, 3, 1), (4, 4))  # the caller's dataset is unchanged
    assert out["p"].chunks == ((3, 3, 3, 1), (4, 4))  # no shards: left alone
    assert out["a"].data.name == aligned_already.data.name  # aligned: the very same graph
    assert out["m"].chunks is None
    for name in ds.data_vars:
        np.testing.assert_array_equal(out[name].values, values)


@given(start=st.integers(0, 60), length=st.integers(-3, 60), unit=st.integers(1, 17))
def test_unit_bounds_split_a_range_at_every_multiple_of_the_unit(start, length, unit):
    stop = start + length
    expected: list[list[int]] = []  # the rows of [start, stop), grouped by row // unit
    for row in range(start, stop):
        if expected and expected[-1][0] // unit == row // unit:
            expected[-1].append(row)
        else:
            expected.append([row])
    bounds = zarr_io.unit_bounds(start, stop, unit)
    assert bounds == [(rows[0], rows[-1] + 1) for rows in expected]


@pytest.mark.parametrize("unit", [0, -4])
def test_unit_bounds_refuses_a_unit_below_one(unit):
    with pytest.raises(ValueError, match="unit must be >= 1"):
        zarr_io.unit_bounds(0, 10, unit)


def test_write_unit_is_the_shard_length_else_the_chunk_length(tmp_path):
    plain = zarr.create_array(str(tmp_path / "p.zarr"), shape=(20, 3), chunks=(5, 3), dtype="u1")
    sharded = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=(20, 3), chunks=(2, 3), shards=(6, 3), dtype="u1"
    )
    assert zarr_io.write_unit(plain) == 5
    assert zarr_io.write_unit(sharded) == 6


# -- the images store of a results store -----------------------------------------------------
def test_images_store_attrs_record_the_absolute_and_a_resolvable_relative_path(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    attrs = zarr_io.images_store_attrs("data/d.zarr", "out/deep/r.zarr")
    images = str(tmp_path / "data" / "d.zarr")
    assert attrs[zarr_io.IMAGES_STORE_ATTR] == images
    relative = attrs[zarr_io.IMAGES_STORE_RELATIVE_ATTR]
    assert relative == "../../../data/d.zarr"
    assert posixpath.normpath(posixpath.join(str(tmp_path / "out/deep/r.zarr"), relative)) == images


@pytest.mark.parametrize(
    ("images", "results", "relative"),
    [
        ("s3://bkt/d.zarr", "s3://bkt/out/r.zarr", "../../d.zarr"),
        ("s3://a/d.zarr", "s3://b/r.zarr", "../../a/d.zarr"),  # another bucket, same service
        ("s3://bkt/d.zarr", "gs://bkt/r.zarr", None),
        ("/w/d.zarr", "s3://bkt/r.zarr", None),
        ("s3://bkt/d.zarr", "/w/r.zarr", None),
    ],
)
def test_images_store_attrs_relative_only_on_the_same_filesystem(images, results, relative):
    attrs = zarr_io.images_store_attrs(images, results)
    assert attrs[zarr_io.IMAGES_STORE_ATTR] == images
    assert attrs.get(zarr_io.IMAGES_STORE_RELATIVE_ATTR) == relative


def _link(images: str, results: str, **changes) -> dict:
    return {**zarr_io.images_store_attrs(images, results), **changes}


def test_images_store_of_a_moved_pair_is_its_own_copy(images, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(images, moved / "d.zarr")
    attrs = _link(str(images), str(tmp_path / "r.zarr"))  # recorded before the move
    found = zarr_io.images_store_of(attrs, str(moved / "r.zarr"))
    assert found == (str(moved / "d.zarr"), "found by its path relative to the results")
    # the original, when the copy has no images beside it
    found = zarr_io.images_store_of(attrs, str(tmp_path / "elsewhere" / "r.zarr"))
    assert found == (str(images), "recorded in the results")
    assert zarr_io.images_store_of(attrs, None) == (str(images), "recorded in the results")


def test_images_store_of_an_unfinished_images_store_is_found(tmp_path):
    images = str(tmp_path / "d.zarr")
    os.mkdir(partial_path(images))  # being ingested: found, so that it is said unfinished
    attrs = _link(images, str(tmp_path / "r.zarr"))
    assert zarr_io.images_store_of(attrs, str(tmp_path / "r.zarr")) == (
        images,
        "found by its path relative to the results",
    )


def test_images_store_of_says_when_neither_location_exists(tmp_path):
    images, results = str(tmp_path / "gone.zarr"), str(tmp_path / "r.zarr")
    attrs = _link(images, results)
    assert zarr_io.images_store_of(attrs, str(tmp_path / "x" / "r.zarr")) == (
        images,
        f"the recorded images store is missing (neither {str(tmp_path / 'x' / 'gone.zarr')!r} "
        f"nor {images!r} exists)",
    )
    only_relative = {zarr_io.IMAGES_STORE_RELATIVE_ATTR: "../gone.zarr"}
    assert zarr_io.images_store_of(only_relative, results)[0] == images


@pytest.mark.parametrize(
    "attrs",
    [{}, {"images_store": 3, "images_store_relative": ["x"]}, {"images_store": ""}],
)
def test_images_store_of_unrecorded_asks_for_images(attrs):
    assert zarr_io.images_store_of(attrs, "/w/r.zarr") == (
        None,
        "the results do not record their images store: pass --images STORE",
    )


def test_images_store_of_resolves_the_relative_path_within_a_url(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bkt/d.zarr/zarr.json", b"{}")
    try:
        attrs = _link("memory://old/d.zarr", "memory://old/out/r.zarr")
        assert attrs[zarr_io.IMAGES_STORE_RELATIVE_ATTR] == "../../d.zarr"
        assert zarr_io.images_store_of(attrs, "memory://bkt/out/r.zarr") == (
            "memory://bkt/d.zarr",
            "found by its path relative to the results",
        )
    finally:
        fs.rm("/bkt", recursive=True)
