"""Nothing lost: pupsnr deletes only what it can prove it wrote, and finds what it wrote.

Real folders, real stores, real processes: a SIGKILLed ingest, `dask scheduler` + `dask
worker` started in another working directory, moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from conftest import random_photo, write_image
from PIL import Image
from test_resume import killed_api
from test_s3 import BUCKET, s3  # noqa: F401  (the moto server fixture)

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import query
from pupsnr_dask import run_experiment as run
from pupsnr_dask.advise import plan_advice
from pupsnr_dask.cli import main
from pupsnr_dask.ingest import list_files
from pupsnr_dask.schema import json_attr
from pupsnr_dask.store.fs import NotOursError, partial_path, remove_store
from pupsnr_dask.store.zarr_io import open_store
from pupsnr_dask.verify import verify_store

SIZE, CHUNK = 32, 3
SCALES = [1, 2, 8]
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")


def make_src(folder: Path, n: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(folder / f"img{i:02d}.png", random_photo(rng, 30, 40))
    return folder


def sync_ingest(src, store, **kwargs):
    with dask.config.set(scheduler="sync"):
        return ingest(str(src), str(store), size=SIZE, chunk_size=CHUNK, progress=False, **kwargs)


def sync_run(store, results, **kwargs):
    with dask.config.set(scheduler="sync"):
        return run(str(store), str(results), scales=SCALES, progress=False, **kwargs)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (or ``folder`` itself) with a digest of its bytes."""
    paths = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pupsnr: error: "), err
    return err


@pytest.fixture
def world(tmp_path):
    """SRC (photos/ with a sub-folder), an images store and its results beside it."""
    src = make_src(tmp_path / "top" / "photos")
    make_src(src / "sub", 2, seed=1)
    sync_ingest(src, tmp_path / "d.zarr")
    sync_run(tmp_path / "d.zarr", tmp_path / "r.zarr")
    return tmp_path


# -- 1. --overwrite deletes only what it wrote -------------------------------------------------
@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("top/photos", "is SRC"),
        ("top/photos/../photos", "is SRC"),
        ("link-to-photos", "is SRC"),
        ("top", "is a folder above SRC"),
        ("top/photos/sub", "is inside SRC"),
        ("top/photos/new.zarr", "is inside SRC"),
        ("notes", "is not a pupsnr 'images' store"),
        ("r.zarr", "is a pupsnr 'psnr' store, not a 'images' one"),
    ],
)
def test_ingest_overwrite_refuses_what_it_did_not_write(
    output, why, world, local_cluster, capsys, monkeypatch
):
    (world / "notes").mkdir()
    (world / "notes" / "keep.txt").write_text("mine")
    (world / "link-to-photos").symlink_to(world / "top" / "photos")
    before = snapshot(world)
    monkeypatch.chdir(world)
    argv = ["ingest", "top/photos", "-o", output, "--overwrite", "--size", str(SIZE), "-q"]
    assert main([*argv, "--scheduler", local_cluster.scheduler.address]) == 2
    assert why in one_line_error(capsys)
    assert snapshot(world) == before


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("d.zarr", "is the images store"),
        ("./x/../d.zarr", "is the images store"),
        ("d.zarr/r.zarr", "is inside the images store"),
        (".", "is a folder above the images store"),
        ("notes", "is not a pupsnr 'psnr' store"),
        ("images-copy.zarr", "is a pupsnr 'images' store, not a 'psnr' one"),
    ],
)
def test_run_overwrite_refuses_its_input_and_what_it_did_not_write(
    output, why, world, local_cluster, capsys, monkeypatch
):
    (world / "notes").mkdir()
    (world / "notes" / "keep.txt").write_text("mine")
    shutil.copytree(world / "d.zarr", world / "images-copy.zarr")
    before = snapshot(world)
    monkeypatch.chdir(world)
    argv = ["run", "d.zarr", "-o", output, "--overwrite", "-q"]
    assert main([*argv, "--scheduler", local_cluster.scheduler.address]) == 2
    assert why in one_line_error(capsys)
    assert snapshot(world) == before


def test_overwrite_replaces_its_own_stores_and_journals(world):
    src, store, results = world / "top" / "photos", world / "d.zarr", world / "r.zarr"
    reference = snapshot(store)
    killed_api("ingest:staged", "ingest", src, world / "again.zarr")  # a journal of ours
    assert Path(partial_path(str(world / "again.zarr"))).is_dir()
    sync_ingest(src, world / "again.zarr", overwrite=True)
    assert not Path(partial_path(str(world / "again.zarr"))).exists()
    summary = sync_ingest(src, store, overwrite=True)
    assert summary.n_images == 7 and snapshot(store) == reference
    sync_run(store, results, overwrite=True)
    assert verify_store(str(results)).ok


def test_implicit_deletions_spare_what_is_not_ours(world, tmp_path):
    """The leftovers a rerun discards on its own are discarded only when provably ours."""
    src = world / "top" / "photos"
    # An ingest killed before its store existed; meanwhile a user folder appears at STORE.
    store = world / "late.zarr"
    killed_api("ingest:staged", "ingest", src, store)
    store.mkdir()
    (store / "keep.txt").write_text("mine")
    with pytest.raises(OSError, match="holds files that are not part of a Zarr"):
        sync_ingest(src, store)
    assert (store / "keep.txt").read_text() == "mine"
    # A folder named like a journal, that pupsnr did not write.
    for target in (world / "j.zarr", world / "jr.zarr"):
        partial = Path(partial_path(str(target)))
        partial.mkdir()
        (partial / "keep.txt").write_text("mine")
    (world / "jr.zarr").mkdir()
    (world / "jr.zarr" / "keep.txt").write_text("mine too")
    before = snapshot(world)
    with pytest.raises(OSError, match="which pupsnr never writes there"):
        sync_ingest(src, world / "j.zarr")
    with pytest.raises(OSError, match="is not a pupsnr 'psnr' store"):
        sync_run(world / "d.zarr", world / "jr.zarr")
    assert snapshot(world) == before


@pytest.fixture(scope="module")
def s3_bucket(s3):  # noqa: F811
    """The moto server of tests/test_s3.py; its bucket is removed afterwards (moto's state is
    per process, and test_s3.py creates the bucket again)."""
    yield s3
    s3.fs.rm(BUCKET, recursive=True)


def test_glob_characters_in_s3_names_are_names(s3_bucket, tmp_path):
    """`d*.zarr` is one store, not a pattern; `r[1].zarr` finishes and unlocks."""
    server = s3_bucket
    make_src(tmp_path / "src", 4)
    server.fs.put(f"{tmp_path / 'src'}/", f"{BUCKET}/globsrc/", recursive=True)
    src, opts, base = f"s3://{BUCKET}/globsrc", server.options(), f"s3://{BUCKET}/globs"
    with dask.config.set(scheduler="threads"):
        for name in ("d1.zarr", "d2.zarr", "data.zarr", "d*.zarr"):
            ingest(str(src), f"{base}/{name}", size=SIZE, storage_options=opts, progress=False)
        others = {p: server.fs.cat_file(p) for p in server.fs.find(f"{BUCKET}/globs")
                  if not p.startswith(f"{BUCKET}/globs/d*.zarr")}  # fmt: skip
        ingest(str(src), f"{base}/d*.zarr", size=SIZE, overwrite=True, storage_options=opts,
               progress=False)  # fmt: skip
        assert {p: server.fs.cat_file(p) for p in others} == others
        ingest(str(src), f"{base}/r[1].zarr", size=SIZE, storage_options=opts, progress=False)
        run(f"{base}/r[1].zarr", f"{base}/p[1].zarr", scales=SCALES, storage_options=opts,
            progress=False)  # fmt: skip
        run(f"{base}/d*.zarr", f"{base}/p[1].zarr", scales=SCALES, overwrite=True,
            storage_options=opts, progress=False)  # fmt: skip
    left = server.fs.find(f"{BUCKET}/globs")
    assert not [p for p in left if p.endswith((".lock", ".partial")) or ".partial/" in p], left
    assert {p: server.fs.cat_file(p) for p in others} == others
    cube = xr.open_zarr(f"{base}/p[1].zarr", storage_options=opts)
    assert cube.attrs["images_store"] == f"{base}/d*.zarr" and cube.sizes["image"] == 4


# -- 2. a store inside SRC is not a source -------------------------------------------------------
def test_a_store_written_inside_src_is_skipped_on_the_rerun(tmp_path, monkeypatch):
    photos = make_src(tmp_path / "photos")
    monkeypatch.chdir(photos)
    first = sync_ingest(".", "data.zarr")
    assert first.n_files == 5
    second = sync_ingest(".", "data.zarr")
    lines = second.lines()
    assert "skipped 1 Zarr store inside SRC: data.zarr" in lines
    assert second.n_files == 0 and any("is up to date" in line for line in lines), lines
    assert json_attr(xr.open_zarr("data.zarr").attrs, "rejected") == []


def test_listing_skips_stores_journals_and_their_locks(tmp_path):
    photos = make_src(tmp_path / "photos", 2)
    sync_ingest(photos, photos / "deep" / "x.zarr")
    (photos / "deep" / "x.zarr.lock").write_text("{}")
    journal = photos / "y.zarr.partial"
    (journal / "records").mkdir(parents=True)
    (journal / "plan.json").write_text("{}")
    (photos / "y.zarr.lock").write_text("{}")
    (photos / "notes.partial").mkdir()  # not a journal: listed
    (photos / "notes.partial" / "a.txt").write_text("a")
    skipped: list[str] = []
    assert list_files(str(photos), skipped=skipped) == [
        "img00.png",
        "img01.png",
        "notes.partial/a.txt",
    ]
    assert skipped == ["deep/x.zarr", "y.zarr.partial"]


# -- 5. paths, copies, the rest -------------------------------------------------------------------
def test_relative_paths_on_an_existing_cluster_started_elsewhere(tmp_path, monkeypatch, capsys):
    from clusters import process_cluster
    from distributed import Client

    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    elsewhere.mkdir()
    make_src(here / "photos")
    monkeypatch.chdir(here)
    with process_cluster(tmp_path / "cluster", n_workers=1, cwd=elsewhere) as cluster:
        common = ["--scheduler", cluster.address, "-q"]
        assert main(["ingest", "photos", "-o", "d.zarr", "--size", str(SIZE), *common]) == 0
        assert main(["run", "d.zarr", "-o", "r.zarr", "--scales", "1,2,8", *common]) == 0
        assert main(["verify", "r.zarr", *common]) == 0
        assert "OK" in capsys.readouterr().out
        assert xr.open_zarr(here / "r.zarr").sizes["image"] == 5
        assert not any(elsewhere.iterdir())  # nothing written where the worker runs
        # The library takes paths as given: relative ones the worker cannot find fail first.
        with Client(cluster.address, set_as_default=True):
            with pytest.raises(FileNotFoundError, match=r"workers cannot read SRC 'photos'"):
                ingest("photos", "d2.zarr", size=SIZE, progress=False)
            with pytest.raises(
                FileNotFoundError, match=r"workers cannot read the images store 'd.zarr'"
            ):
                run("d.zarr", "r2.zarr", scales=SCALES, progress=False)
    left = sorted(p.name for p in here.iterdir())
    assert left == ["d.zarr", "photos", "r.zarr"], left  # no partial output, no lock


def test_a_moved_or_copied_pair_of_stores_keeps_its_link(world, capsys):
    (world / "new").mkdir()
    for name in ("d.zarr", "r.zarr"):
        shutil.move(world / name, world / "new" / name)
    results, images = world / "new" / "r.zarr", world / "new" / "d.zarr"
    attrs = xr.open_zarr(results).attrs
    assert attrs["images_store"] == str(world / "d.zarr")
    assert attrs["images_store_relative"] == "../d.zarr"
    assert main(["verify", str(results), "-q", "--n-workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"images store checked: {images} (found by its path relative to the results)" in out
    cube = open_store(str(results), "psnr")
    found, location, note = query.images_store_of(cube)
    assert found is not None and location == str(images), note
    predictions = world / "preds"
    shutil.copytree(world / "top" / "photos", predictions)
    plan = plan_advice(str(results), str(predictions), variant="gray")
    assert plan.images.encoding["source"] == str(images)
    # A copy of both, next to the originals: the copy's results use the copy's images.
    shutil.copytree(world / "new", world / "copy")
    shutil.rmtree(world / "copy" / "d.zarr" / "images")  # damaged copy: must be the one checked
    assert main(["verify", str(world / "copy" / "r.zarr"), "-q", "--n-workers", "1"]) == 1
    assert f"images store checked: {world / 'copy' / 'd.zarr'}" in capsys.readouterr().out
    # Rerunning `run` on the moved pair recognises its own results.
    notes: list[str] = []
    sync_run(images, results, notify=notes.append)
    assert notes == [f"{results} is already complete for these images and parameters: "
                     "nothing recomputed"]  # fmt: skip


def test_an_ingest_killed_while_staging_is_named_unfinished(world, capsys):
    src, store = world / "top" / "photos", world / "k.zarr"
    killed_api("ingest:batch:1", "ingest", src, store)
    assert not store.exists() and Path(partial_path(str(store))).is_dir()
    how = f"rerun `pupsnr ingest {src} -o {store}` to finish it"
    assert main(["run", str(store), "-o", str(world / "kr.zarr"), "-q"]) == 2
    err = one_line_error(capsys)
    assert "is unfinished" in err and how in err
    assert main(["report", str(store)]) == 2
    err = one_line_error(capsys)
    assert "is unfinished" in err and how in err
    assert main(["verify", str(store), "-q", "--n-workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "is unfinished" in out and how in out


def test_a_size_the_default_scales_do_not_divide_is_refused_before_any_work(tmp_path):
    src, store = make_src(tmp_path / "photos", 1), tmp_path / "d.zarr"
    with pytest.raises(ValueError, match=r"scale \(1, 2, 4, 8, 16, 32\) divides it, got 48"):
        ingest(str(src), str(store), size=48, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_duplicate_pixels_are_kept_and_warned_about(tmp_path, capsys):
    src = make_src(tmp_path / "photos", 2)
    buf = io.BytesIO()
    Image.fromarray(random_photo(np.random.default_rng(7), 30, 40)).save(buf, format="JPEG")
    (src / "a.jpg").write_bytes(buf.getvalue())
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(src / "a.png")  # same pixels
    summary = sync_ingest(src, tmp_path / "d.zarr")
    assert summary.n_images == 4
    assert "warning: identical pixels in 2 images (all kept): a.jpg, a.png" in summary.lines()
    assert main(["verify", str(tmp_path / "d.zarr"), "-q", "--n-workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ")
    assert "warning: identical pixels in 2 images: a.jpg, a.png" in out.splitlines()


def test_lock_and_journal_removal_use_exact_names_in_memory_filesystems():
    """The same exact-name deletion on another fsspec filesystem (memory://)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("s1.zarr", "s2.zarr"):
        fs.pipe_file(f"/g/{name}/zarr.json", json.dumps({"attributes": {}}).encode())
    fs.pipe_file(
        "/g/s?.zarr/zarr.json", json.dumps({"attributes": {"pupsnr_kind": "images"}}).encode()
    )
    remove_store("memory://g/s?.zarr", kind="images")
    assert sorted(fs.find("/g")) == ["/g/s1.zarr/zarr.json", "/g/s2.zarr/zarr.json"]
    with pytest.raises(NotOursError):
        remove_store("memory://g/s1.zarr", kind="images")
    fs.rm("/g", recursive=True)
