"""`pupsnr verify`: sound stores pass; each kind of damage is found and named. Sharding."""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import random_photo, write_image
from stores import write_store

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask.cli import main
from pupsnr_dask.store.fs import partial_path
from pupsnr_dask.store.integrity import missing_chunks
from pupsnr_dask.store.zarr_io import align_to_shards, unit_bounds, write_unit
from pupsnr_dask.verify import verify_store

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """An images store (8 images, chunks of 3) and its results; another images store."""
    rng = np.random.default_rng(8)
    root = tmp_path_factory.mktemp("verify")
    for i in range(8):
        write_image(root / "src" / f"img{i}.png", random_photo(rng, 30, 40))
    write_image(root / "other" / "x.png", random_photo(rng, 30, 40))
    with dask.config.set(scheduler="sync"):
        ingest(str(root / "src"), str(root / "d.zarr"), size=32, chunk_size=3, progress=False)
        ingest(str(root / "other"), str(root / "o.zarr"), size=32, progress=False)
        run(str(root / "d.zarr"), str(root / "r.zarr"), scales=[1, 2, 4], progress=False)
    return root


def check(store: Path, **kwargs):
    with dask.config.set(scheduler="sync"):
        return verify_store(str(store), progress=False, **kwargs)


def test_sound_stores_pass(stores, local_cluster, capsys):
    found = check(stores / "d.zarr")
    assert found.ok and found.kind == "images", found.defects
    assert found.checked["chunks read"] == 3 + 6  # 3 of images, 1 for each of 6 labels
    found = check(stores / "r.zarr", recompute=None)
    assert found.ok and found.kind == "psnr", found.defects
    assert found.checked["images recomputed"] == 8
    address = local_cluster.scheduler.address
    assert main(["verify", str(stores / "r.zarr"), "--scheduler", address, "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {stores / 'r.zarr'} is a sound pupsnr 'psnr'")


def _zarr(store: Path, name: str):
    return zarr.open_array(str(store / name), mode="r+")


IMAGE_DAMAGES = {
    "deleted chunk": (
        lambda p: (p / "images/c/2/0/0/0").unlink(),
        "chunk 'images/c/2/0/0/0' is missing",
    ),
    "garbage chunk": (
        lambda p: (p / "images/c/0/0/0/0").write_bytes(b"garbage" * 9),
        "chunk 'images/c/0/0/0/0' is damaged (checksum mismatch)",
    ),
    "truncated metadata": (
        lambda p: (p / "color_score/zarr.json").write_text('{"shape": [8'),
        "metadata file 'color_score/zarr.json' is not valid JSON",
    ),
    "stale consolidated metadata": (
        lambda p: _zarr(p, "color_score").resize((9,)),
        "consolidated metadata is stale for 'color_score': shape (8,) there, (9,) in its own",
    ),
    "an image never written": (
        lambda p: _zarr(p, "images").__setitem__(4, 0),
        "image 4 is all zeros (never written?)",
    ),
    "a source twice": (
        lambda p: _zarr(p, "source").__setitem__(1, "img0.png"),
        "1 sources appear more than once",
    ),
    "unfinished": (
        lambda p: Path(partial_path(str(p))).mkdir(),
        "is unfinished",
    ),
    "a foreign store": (
        lambda p: (shutil.rmtree(p), xr.Dataset({"a": ("x", [1])}).to_zarr(p)),
        "not a pupsnr store",
    ),
}


@pytest.mark.parametrize("damage", list(IMAGE_DAMAGES))
def test_each_damage_to_an_images_store_is_listed(damage, stores, tmp_path):
    store = tmp_path / "d.zarr"
    shutil.copytree(stores / "d.zarr", store)
    change, message = IMAGE_DAMAGES[damage]
    change(store)
    found = check(store)
    assert not found.ok
    assert any(message in d for d in found.defects), found.defects
    assert found.lines()[0].startswith(f"{len(found.defects)} defects in")


def _tamper_mse(results: Path, image: int) -> None:
    """Change one image's MSE and PSNR consistently: only recomputing can tell."""
    mse, psnr = _zarr(results, "mse"), _zarr(results, "psnr")
    values = mse[image] + 0.5
    mse[image] = values
    psnr[image] = 10 * np.log10(255.0**2 / values)


def test_results_are_checked_against_their_images(stores, tmp_path, local_cluster, capsys):
    results = tmp_path / "r.zarr"
    shutil.copytree(stores / "r.zarr", results)
    _tamper_mse(results, 7)
    assert check(results, recompute=0).ok  # nothing recomputed: consistent on its own
    found = check(results, recompute=1)  # the first chunk only: images 0-2
    assert found.ok and found.checked["images recomputed"] == 3
    found = check(results, recompute=2)  # first and last chunks
    assert found.defects == ["image 7: stored MSE differs from the recomputed one"]
    _zarr(results, "psnr")[2, 0, 1] = 99.0
    assert "psnr is not 10*log10(255**2 / mse) everywhere" in check(results).defects
    found = check(stores / "r.zarr", images=str(stores / "o.zarr"))
    assert any(d.startswith("image differs from the images store") for d in found.defects)
    address = local_cluster.scheduler.address
    args = ["verify", str(results), "--recompute", "all", "--scheduler", address, "-q"]
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"2 defects in pupsnr 'psnr' store {results}")
    assert "  - image 7: stored MSE differs from the recomputed one" in out
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2
    assert main(["verify", str(results), "--recompute", "some"]) == 2


# -- Zarr sharding: not used by the pupsnr writers; they realign if it ever is --------------------
def test_sharded_round_trip_writes_whole_shards_only(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    blocks = da.from_array(pixels, chunks=(5, -1, -1, -1))  # blocks straddle shards of 6
    ds = xr.Dataset({"images": (("image", "y", "x", "channel"), blocks)})
    ds["images"].encoding = {"chunks": (2, 8, 8, 3), "shards": (6, 8, 8, 3)}
    with pytest.raises(ValueError, match="overlap multiple Dask chunks"):
        ds.to_zarr(tmp_path / "naive.zarr", mode="w")  # xarray refuses partial shards
    aligned = align_to_shards(ds)["images"].chunks[0]
    assert aligned == (6, 6, 6, 5)  # every block boundary on a shard boundary
    with dask.config.set(scheduler="threads", num_workers=4):
        write_store(ds, str(tmp_path / "sharded.zarr"), progress=False)
    array = zarr.open_array(str(tmp_path / "sharded.zarr/images"), mode="r")
    assert array.shards == (6, 8, 8, 3) and array.chunks == (2, 8, 8, 3)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    assert hashlib.sha256(array[:].tobytes()).hexdigest() == digest
    assert missing_chunks(str(tmp_path / "sharded.zarr")) == []
    assert check(tmp_path / "sharded.zarr").defects == [
        "not a pupsnr store (attribute 'pupsnr_kind' is None)"
    ]


def test_resumable_writers_split_work_at_shard_boundaries(tmp_path):
    """The region writers of ingest and run: one task per shard, even from an offset."""
    target = zarr.create_array(
        str(tmp_path / "t.zarr"), shape=(40, 4), chunks=(2, 4), shards=(8, 4), dtype="i8"
    )
    unit = write_unit(target)
    assert unit == 8
    bounds = unit_bounds(5, 40, unit)  # an append after 5 existing rows
    assert all(a // unit == (b - 1) // unit for a, b in bounds)  # never two shards per task
    values = np.arange(160).reshape(40, 4)

    def write(bound: tuple[int, int]) -> None:
        zarr.open_array(str(tmp_path / "t.zarr"), mode="r+")[bound[0] : bound[1]] = values[
            bound[0] : bound[1]
        ]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, bounds))
    np.testing.assert_array_equal(target[5:], values[5:])
