"""``ingest/plan.py``: checked parameters, batches, the journal's plan, the store it extends.

The command-level cases (a killed ingest resumed, a finished store grown, other parameters
refused) are in ``test_resume.py`` and ``test_ingest.py``; these hold the planning functions to
their own contract on real folders, real Zarr arrays and a real finished store.
"""

from __future__ import annotations

import json
import shutil

import dask
import numpy as np
import pytest
import zarr
from conftest import random_photo, write_image

from pupsnr_dask import ingest_folder
from pupsnr_dask.ingest import plan as iplan
from pupsnr_dask.ingest.listing import canonical_src
from pupsnr_dask.store.fs import partial_path
from pupsnr_dask.store.journal import IngestBase, IngestParams, IngestPlan, read_plan

SIZE, CHUNK = 32, 2


def _job(src, store, *, size=SIZE, threshold=0.995, chunk=CHUNK, test_count=0) -> iplan.Job:
    params = IngestParams(canonical_src(str(src)), size, threshold, chunk)
    return iplan.Job(str(src), str(store), params, test_count, None, False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished images store of 3 colour photos and 1 gray one (rejected), chunk 2."""
    root = tmp_path_factory.mktemp("finished")
    rng = np.random.default_rng(11)
    src = root / "src"
    for name in ("a.png", "b.png", "c.png"):
        write_image(src / name, random_photo(rng, 24, 30))
    write_image(src / "gray.png", random_photo(rng, 24, 30)[..., 0])
    store = root / "images.zarr"
    with dask.config.set(scheduler="sync"):
        ingest_folder(str(src), str(store), size=SIZE, chunk_size=CHUNK, progress=False)
    return src, store


@pytest.fixture
def copy_of(finished, tmp_path):
    """A private copy of the finished store (planning writes its journal next to it)."""
    src, store = finished
    mine = tmp_path / "images.zarr"
    shutil.copytree(store, mine)
    return src, mine


# -- check_ingest_args ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "threshold", "test_count", "chunk_size", "named"),
    [
        (0, 0.5, 0, 1, "size"),
        (-32, 0.5, 0, 1, "size"),
        (16, 0.5, 0, 1, "size"),  # the scale 32 does not divide it
        (48, 0.5, 0, 1, "size"),
        (32, 0.0, 0, 1, "threshold"),
        (32, 1.0001, 0, 1, "threshold"),
        (32, -0.5, 0, 1, "threshold"),
        (32, float("nan"), 0, 1, "threshold"),
        (32, 0.5, -1, 1, "test_count"),
        (32, 0.5, 0, 0, "chunk_size"),
        (32, 0.5, 0, -3, "chunk_size"),
    ],
)
def test_check_ingest_args_names_the_parameter_out_of_range(
    size, threshold, test_count, chunk_size, named
):
    with pytest.raises(ValueError, match=f"^{named} must be"):
        iplan.check_ingest_args(size, threshold, test_count, chunk_size)


@pytest.mark.parametrize(
    ("size", "threshold", "test_count", "chunk_size"),
    [
        (32, 1.0, 0, 1),
        (64, 1e-9, 5, 1),
        (256, 0.995, 0, 32),
        (32 * 7, 0.5, 100, 1000),
        (2048, 0.995, 0, 32),  # 384 MiB a chunk
        (18_912, 0.995, 0, 1),  # the largest size alone in its chunk within 1 GiB
    ],
)
def test_check_ingest_args_accepts_the_edges_of_each_range(size, threshold, test_count, chunk_size):
    assert iplan.check_ingest_args(size, threshold, test_count, chunk_size) is None


@pytest.mark.parametrize(
    ("size", "chunk_size", "hint"),
    [
        (100_000, 32, "use a size of at most 3328$"),  # 30 GB an image: no chunk size helps
        (4096, 32, "use a chunk size of at most 21, or a size of at most 3328$"),
        (4096, 22, "use a chunk size of at most 21, or a size of at most 4032$"),
    ],
)
def test_check_ingest_args_refuses_a_chunk_of_more_than_1_gib(size, chunk_size, hint):
    with pytest.raises(ValueError, match=f"^size {size} with chunk_size {chunk_size}: .*{hint}"):
        iplan.check_ingest_args(size, 0.5, 0, chunk_size)
    # what the hint names is accepted (its chunk of pixels is within 1 GiB)
    fits = 2**30 // (size * size * 3)
    if fits:
        iplan.check_ingest_args(size, 0.5, 0, fits)
    largest = int(hint.rsplit(" ", 1)[1].rstrip("$"))
    iplan.check_ingest_args(largest, 0.5, 0, chunk_size)
    with pytest.raises(ValueError, match="one task may hold"):
        iplan.check_ingest_args(largest + 32, 0.5, 0, chunk_size)


def test_check_ingest_args_names_the_first_bad_parameter_only():
    with pytest.raises(ValueError, match=r"^size must be") as err:
        iplan.check_ingest_args(0, 2.0, -1, 0)
    assert "threshold" not in str(err.value)


# -- batches and the Job's paths --------------------------------------------------------------
@pytest.mark.parametrize(("n", "chunk"), [(0, 3), (1, 3), (6, 3), (7, 3), (7, 1), (5, 10)])
def test_batches_cut_the_files_in_order_into_chunk_sized_lists(n, chunk):
    files = tuple(f"f{i:02d}.png" for i in range(n))
    plan = IngestPlan(IngestParams("/src", SIZE, 0.9, chunk), files)
    got = iplan.batches(plan)
    assert [f for b in got for f in b] == list(files)
    assert all(len(b) == chunk for b in got[:-1])
    assert len(got) == -(-n // chunk)  # ceil: the last batch is the short one
    if got:
        assert 1 <= len(got[-1]) <= chunk
        assert all(isinstance(b, list) for b in got)


@pytest.mark.parametrize("store", ["/data/x.zarr", "/data/x.zarr/", "s3://bucket/x.zarr"])
def test_job_paths_are_the_journal_its_staging_array_and_the_stores_arrays(store):
    job = iplan.Job("/src", store, IngestParams("/src", SIZE, 0.9, 2), 0, None, None)
    bare = store.rstrip("/")
    assert job.partial == partial_path(store) == f"{bare}.partial"
    assert job.staging == f"{bare}.partial/pixels"
    assert job.url("images") == f"{bare}/images"
    assert job.url("source") == f"{bare}/source"


# -- plan_new_files / _start on a store that does not exist yet ------------------------------
def test_plan_new_files_for_a_new_store_writes_the_plan_and_an_empty_staging_array(tmp_path):
    job = _job(tmp_path / "src", tmp_path / "new.zarr", chunk=3)
    sources = [f"f{i}.png" for i in range(7)]
    notes: list[str] = []
    plan = iplan.plan_new_files(job, sources, notes)
    assert isinstance(plan, IngestPlan)
    assert plan.files == tuple(sources) and plan.params == job.params
    assert plan.base == IngestBase()
    assert IngestPlan.from_json(read_plan(job.store)) == plan
    staging = zarr.open_array(job.staging, mode="r")
    assert staging.shape == (7, SIZE, SIZE, 3)
    assert staging.chunks == (3, SIZE, SIZE, 3)
    assert staging.dtype == np.uint8
    assert not np.asarray(staging[:]).any()  # nothing staged yet: the fill value
    assert not (tmp_path / "new.zarr").exists()  # the store itself is not created by planning
    assert notes == []


def test_a_planned_ingest_is_found_again_as_an_interrupted_plan(tmp_path):
    job = _job(tmp_path / "src", tmp_path / "new.zarr")
    plan = iplan.plan_new_files(job, ["a.png", "b.png", "c.png"], [])
    notes: list[str] = []
    assert iplan.interrupted_plan(job, notes) == plan
    assert notes == []
    assert (tmp_path / "new.zarr.partial").is_dir()


def test_interrupted_plan_is_none_without_a_journal(tmp_path):
    notes: list[str] = []
    assert iplan.interrupted_plan(_job(tmp_path / "src", tmp_path / "x.zarr"), notes) is None
    assert notes == []


@pytest.mark.parametrize(
    ("changed", "value"), [("size", 64), ("threshold", 0.5), ("chunk_size", 3)]
)
def test_interrupted_plan_with_other_parameters_is_refused_and_kept(tmp_path, changed, value):
    job = _job(tmp_path / "src", tmp_path / "x.zarr")
    iplan.plan_new_files(job, ["a.png", "b.png"], [])
    kwargs = {"size": SIZE, "threshold": 0.995, "chunk": CHUNK}
    kwargs["chunk" if changed == "chunk_size" else changed] = value
    other = _job(tmp_path / "src", tmp_path / "x.zarr", **kwargs)
    with pytest.raises(ValueError, match=f"other parameters \\({changed}="):
        iplan.interrupted_plan(other, [])
    assert iplan.interrupted_plan(job, []) is not None  # the journal is still there to finish


def test_interrupted_plan_from_another_src_is_refused(tmp_path):
    job = _job(tmp_path / "src", tmp_path / "x.zarr")
    iplan.plan_new_files(job, ["a.png"], [])
    with pytest.raises(ValueError, match="other parameters \\(src="):
        iplan.interrupted_plan(_job(tmp_path / "elsewhere", tmp_path / "x.zarr"), [])


def _staging_like(job: iplan.Job, n: int, chunk: int) -> None:
    shape, chunks = (n, SIZE, SIZE, 3), (chunk, SIZE, SIZE, 3)
    zarr.create_array(job.staging, shape=shape, chunks=chunks, dtype="uint8", overwrite=True)


def _damage_staging_shape(job: iplan.Job, plan: IngestPlan) -> None:
    _staging_like(job, len(plan.files) + 1, CHUNK)


def _damage_staging_chunks(job: iplan.Job, plan: IngestPlan) -> None:
    _staging_like(job, len(plan.files), CHUNK + 1)


def _remove_staging(job: iplan.Job, plan: IngestPlan) -> None:
    shutil.rmtree(job.staging)


def _damage_plan(job: iplan.Job, plan: IngestPlan) -> None:
    with open(f"{job.partial}/plan.json", "w") as fh:
        fh.write('{"version": 1, "params": ')  # cut short


def _other_plan_version(job: iplan.Job, plan: IngestPlan) -> None:
    doc = plan.to_json()
    doc["version"] = 999
    with open(f"{job.partial}/plan.json", "w") as fh:
        json.dump(doc, fh)


@pytest.mark.parametrize(
    "damage",
    [
        _damage_staging_shape,
        _damage_staging_chunks,
        _remove_staging,
        _damage_plan,
        _other_plan_version,
    ],
)
def test_unusable_leftovers_are_discarded_with_a_note(tmp_path, damage):
    job = _job(tmp_path / "src", tmp_path / "x.zarr")
    plan = iplan.plan_new_files(job, ["a.png", "b.png", "c.png"], [])
    damage(job, plan)
    notes: list[str] = []
    assert iplan.interrupted_plan(job, notes) is None
    assert notes == [f"discarded unusable leftovers of an earlier ingest: {job.partial}"]
    assert not (tmp_path / "x.zarr.partial").exists()


def test_planning_again_replaces_an_earlier_journal(tmp_path):
    job = _job(tmp_path / "src", tmp_path / "x.zarr", chunk=2)
    iplan.plan_new_files(job, ["a.png", "b.png", "c.png"], [])
    zarr.open_array(job.staging, mode="r+")[0] = 7  # something staged for the first plan
    plan = iplan.plan_new_files(job, ["d.png"], [])
    assert iplan.interrupted_plan(job, []) == plan
    staging = zarr.open_array(job.staging, mode="r")
    assert staging.shape == (1, SIZE, SIZE, 3) and not np.asarray(staging[:]).any()


# -- existing_store and plan_new_files on a finished store -----------------------------------
def test_existing_store_is_none_where_nothing_exists(tmp_path):
    assert iplan.existing_store(_job(tmp_path / "src", tmp_path / "none.zarr")) is None


def test_existing_store_counts_what_the_store_holds_and_knows_every_source(finished):
    src, store = finished
    found = iplan.existing_store(_job(src, store))
    assert found is not None
    base, known = found
    assert base == IngestBase(images=3, files=4, rejected=1)
    assert known == {"a.png", "b.png", "c.png", "gray.png"}  # the rejected one too


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"size": 64}, "size"), ({"threshold": 0.9}, "threshold"), ({"chunk": 3}, "chunk_size"),
     ({"test_count": 1}, "test_count")],
)  # fmt: skip
def test_existing_store_made_with_other_parameters_is_refused_naming_them(finished, kwargs, named):
    src, store = finished
    with pytest.raises(ValueError, match=f"was ingested with {named}=.*asks for {named}=") as err:
        iplan.existing_store(_job(src, store, **kwargs))
    assert "--overwrite" in str(err.value)


def test_existing_store_from_another_src_is_refused(finished, tmp_path):
    _, store = finished
    with pytest.raises(ValueError, match="was ingested with src="):
        iplan.existing_store(_job(tmp_path / "other", store))


def test_something_else_at_the_store_path_is_not_taken_for_a_store(tmp_path):
    odd = tmp_path / "odd.zarr"
    odd.mkdir()
    (odd / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not a usable pupsnr images store.*move it away"):
        iplan.existing_store(_job(tmp_path / "src", odd))
    assert (odd / "notes.txt").read_text() == "mine"


def test_a_store_up_to_date_with_src_plans_nothing_and_gives_its_image_count(copy_of):
    src, store = copy_of
    job = _job(src, store)
    assert iplan.plan_new_files(job, ["a.png", "b.png", "c.png", "gray.png"], []) == 3
    assert not (store.parent / "images.zarr.partial").exists()  # no journal started


def test_a_finished_store_is_planned_only_its_new_files_on_top_of_its_counts(copy_of):
    src, store = copy_of
    job = _job(src, store)
    sources = ["0.png", "a.png", "b.png", "c.png", "gray.png", "z/new.png"]
    plan = iplan.plan_new_files(job, sources, [])
    assert isinstance(plan, IngestPlan)
    assert plan.files == ("0.png", "z/new.png")  # in listing order, known ones left out
    assert plan.base == IngestBase(images=3, files=4, rejected=1)
    assert iplan.interrupted_plan(job, []) == plan
    assert zarr.open_array(job.staging, mode="r").shape == (2, SIZE, SIZE, 3)
