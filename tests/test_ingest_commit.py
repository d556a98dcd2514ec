"""``ingest/commit.py``: the split, the duplicate warnings, the journal's markers and the moves.

The command-level cases (stores equal to a reference loop, resumes, the peak disk use, a fully
kept batch moved byte for byte) are in ``test_ingest.py`` and ``test_resume.py``; these hold the
module's own decisions to their contract: which sources are "test", which staged batches are
consumed, when a unit is a staged chunk as it is, when two arrays' chunks are the same bytes,
and what the "store created" marker depends on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil

import dask
import dask.callbacks
import numpy as np
import pytest
import reference
import xarray as xr
import zarr
from conftest import random_photo, write_image

from pupsnr_dask import ingest_folder
from pupsnr_dask.ingest import commit as icommit
from pupsnr_dask.ingest.plan import Job, pixels_compressors, plan_new_files
from pupsnr_dask.kernels.image import Record
from pupsnr_dask.store.codecs import compressors
from pupsnr_dask.store.journal import IngestParams

SIZE = 32


# -- assign_split -----------------------------------------------------------------------------
def _smallest_sha256(sources: list[str], n: int) -> set[str]:
    return set(sorted(sources, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:n])


@pytest.mark.parametrize("n", [0, 1, 5, 19, 20])
def test_assign_split_marks_the_sources_of_smallest_sha256_as_test(n):
    sources = [f"dir/img{i:03d}.png" for i in range(20)]
    split = icommit.assign_split(sources, n)
    assert split.shape == (20,) and set(split) <= {"train", "test"}
    assert {s for s, v in zip(sources, split, strict=True) if v == "test"} == _smallest_sha256(
        sources, n
    )


def test_assign_split_does_not_depend_on_the_order_of_the_sources():
    sources = [f"{c}.jpg" for c in "abcdefghijklmnop"]
    shuffled = list(np.random.default_rng(0).permutation(sources))
    one = dict(zip(sources, icommit.assign_split(sources, 6), strict=True))
    other = dict(zip(shuffled, icommit.assign_split(shuffled, 6), strict=True))
    assert one == other


@pytest.mark.parametrize("n", [-1, 4])
def test_assign_split_refuses_a_test_count_out_of_range(n):
    with pytest.raises(ValueError, match=f"between 0 and 3, got {n}"):
        icommit.assign_split(["a", "b", "c"], n)


# -- duplicate_warnings ------------------------------------------------------------------------
def test_duplicate_warnings_name_each_group_of_identical_pixels_once():
    sources = ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    digests = ["x", "y", "x", "z", "y", "x"]
    assert icommit.duplicate_warnings(sources, digests) == [
        "warning: identical pixels in 3 images (all kept): a.png, c.png, f.png",
        "warning: identical pixels in 2 images (all kept): b.png, e.png",
    ]


def test_duplicate_warnings_are_none_for_distinct_pixels():
    assert icommit.duplicate_warnings(["a", "b", "c"], ["1", "2", "3"]) == []
    assert icommit.duplicate_warnings([], []) == []


def test_duplicate_warnings_show_the_first_five_names_of_a_large_group():
    sources = [f"{i}.png" for i in range(7)]
    (line,) = icommit.duplicate_warnings(sources, ["d"] * 7)
    assert line == (
        "warning: identical pixels in 7 images (all kept): 0.png, 1.png, 2.png, 3.png, 4.png, ..."
    )


def test_duplicate_warnings_refuse_sources_and_digests_of_other_lengths():
    with pytest.raises(ValueError):
        icommit.duplicate_warnings(["a", "b"], ["x"])


# -- consumed ----------------------------------------------------------------------------------
def test_consumed_batches_are_those_no_unit_still_to_copy_reads():
    last = {0: 0, 1: 2, 2: 2, 4: 3}  # batch 3: no accepted image, read by no unit
    assert icommit.consumed(last, set(), 5) == {3}
    assert icommit.consumed(last, {0}, 5) == {0, 3}
    assert icommit.consumed(last, {0, 2}, 5) == {0, 3}  # unit 1 not done: 1 and 2 still needed
    assert icommit.consumed(last, {0, 1, 2}, 5) == {0, 1, 2, 3}
    assert icommit.consumed(last, {0, 1, 2, 3}, 5) == {0, 1, 2, 3, 4}
    assert icommit.consumed(last, {1, 2, 3}, 5) == {3}  # unit 0 not done: nothing else is free


def test_consumed_agrees_with_checking_every_unit_up_to_the_last_use():
    rng = np.random.default_rng(21)
    for _ in range(300):
        n_batches, n_units = int(rng.integers(0, 7)), int(rng.integers(1, 7))
        last = {b: int(rng.integers(0, n_units)) for b in range(n_batches) if rng.random() < 0.8}
        done = {k for k in range(n_units) if rng.random() < 0.6}
        expected = {
            b
            for b in range(n_batches)
            if b not in last or all(k in done for k in range(last[b] + 1))
        }
        assert icommit.consumed(last, done, n_batches) == expected, (last, done, n_batches)


# -- CopiedUnit JSON ---------------------------------------------------------------------------
def test_copied_unit_round_trips_through_its_json_document():
    unit = icommit.CopiedUnit(8, 11, ("a" * 32, "b" * 32, "c" * 32))
    doc = json.loads(json.dumps(unit.to_json()))
    assert doc == {"start": 8, "stop": 11, "digests": ["a" * 32, "b" * 32, "c" * 32]}
    assert icommit.CopiedUnit.from_json(doc) == unit


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "unit",
        {"stop": 2, "digests": ["a", "b"]},
        {"start": 0, "digests": ["a", "b"]},
        {"start": 0, "stop": 2},
        {"start": "zero", "stop": 2, "digests": ["a", "b"]},
        {"start": 0, "stop": 2, "digests": None},
        {"start": 0, "stop": 2, "digests": ["a"]},  # not one digest per image
        {"start": 0, "stop": 2, "digests": ["a", "b", "c"]},
        {"start": 3, "stop": 2, "digests": []},
        {"start": 0, "stop": 2, "digests": "ab"},  # a string: not two digests "a" and "b"
    ],
)
def test_a_damaged_copied_unit_marker_is_not_taken_for_one(doc):
    assert icommit.CopiedUnit.from_json(doc) is None


# -- _created_doc ------------------------------------------------------------------------------
def _records(reason_of_last: str = "not colour: score >= 0.995") -> list[Record]:
    return [
        Record("a.png", True, "", 0.5, 10, 12),
        Record("b.png", False, "not colour: a channel is constant", math.nan, 4, 4),
        Record("c.png", True, "", 0.25, 30, 20),
        Record("d.png", False, reason_of_last, 0.999, 8, 8),
    ]


def test_created_doc_counts_the_kept_images_and_is_equal_for_equal_records():
    doc = icommit._created_doc(_records())
    assert doc["images"] == 2
    assert doc == icommit._created_doc(_records())  # NaN scores included
    assert json.loads(json.dumps(doc)) == doc  # what the journal stores compares equal


@pytest.mark.parametrize(
    "change",
    [
        lambda rs: rs[:3],
        lambda rs: [rs[1], rs[0], *rs[2:]],
        lambda rs: [*rs[:3], Record("d.png", False, "cannot decode: empty file", 0.999, 8, 8)],
        lambda rs: [Record("a.png", True, "", 0.5000001, 10, 12), *rs[1:]],
        lambda rs: [Record("a.png", True, "", 0.5, 11, 12), *rs[1:]],
    ],
)
def test_created_doc_changes_with_any_record(change):
    assert (
        icommit._created_doc(change(_records()))["records"]
        != icommit._created_doc(_records())["records"]
    )


# -- _same_chunk_bytes -------------------------------------------------------------------------
def _array(path, n=5, chunk=2, **kwargs):
    spec = {"dtype": "uint8", "fill_value": 0, "compressors": pixels_compressors()}
    spec.update(kwargs)
    return zarr.create_array(str(path), shape=(n, 8, 8, 3), chunks=(chunk, 8, 8, 3), **spec)


def test_same_chunk_bytes_for_arrays_that_differ_only_in_length(tmp_path):
    staging, final = _array(tmp_path / "s", n=5), _array(tmp_path / "f", n=11)
    assert icommit._same_chunk_bytes(staging, final)
    block = random_photo(np.random.default_rng(5), 16, 8).reshape(2, 8, 8, 3)
    staging[2:4] = block
    final[2:4] = block
    key = "c/1/0/0/0"
    assert (tmp_path / "s" / key).read_bytes() == (tmp_path / "f" / key).read_bytes()


@pytest.mark.parametrize(
    "other",
    [
        {"chunk": 3},
        {"compressors": compressors(3)},
        {"fill_value": 1},
        {"dtype": "uint16"},
        {"shards": (4, 8, 8, 3)},
        {"zarr_format": 2, "compressors": None},
    ],
    ids=["chunks", "codecs", "fill_value", "dtype", "sharded", "zarr_format"],
)
def test_no_same_chunk_bytes_when_the_encoding_differs(tmp_path, other):
    staging = _array(tmp_path / "s")
    final = _array(tmp_path / "f", n=12, **other)
    assert not icommit._same_chunk_bytes(staging, final)
    assert not icommit._same_chunk_bytes(final, staging)


def test_no_same_chunk_bytes_for_sharded_arrays_even_alike(tmp_path):
    """A shard holds several chunks and an index: moving one chunk's file is never right."""
    staging = _array(tmp_path / "s", n=8, shards=(4, 8, 8, 3))
    final = _array(tmp_path / "f", n=12, shards=(4, 8, 8, 3))
    assert staging.metadata.to_dict()["codecs"] == final.metadata.to_dict()["codecs"]
    assert not icommit._same_chunk_bytes(staging, final)


# -- _whole_staged_chunk -----------------------------------------------------------------------
EIGHT = [["f0", "f1", "f2"], ["f3", "f4", "f5"], ["f6", "f7"]]  # 8 files in batches of 3


@pytest.mark.parametrize(
    ("rows", "bounds", "n_final", "batch"),
    [
        ([0, 1, 2], (0, 3), 8, 0),  # every file of batch 0 kept: its chunk as it is
        ([3, 4, 5], (3, 6), 8, 1),
        ([6, 7], (6, 8), 8, 2),  # the short last batch, at the end of the store
        ([0, 1, 2], (3, 6), 6, 0),  # a grown store of 3: batch 0 is the final chunk 1
        ([6, 7], (6, 8), 9, None),  # short, but not the end of the store
        ([0, 2, 3], (0, 3), 7, None),  # file 1 rejected: rows of two batches
        ([4, 5, 6], (3, 6), 7, None),  # shifted by that rejection
        ([0, 1], (0, 2), 2, None),  # file 2 rejected: not all of batch 0
        ([3, 4, 5], (4, 7), 7, None),  # a grown store of 4: not at a chunk boundary
        ([3, 4, 5], (2, 5), 5, None),
    ],
)
def test_whole_staged_chunk_only_for_every_file_of_a_batch_at_a_chunk(rows, bounds, n_final, batch):
    assert icommit._whole_staged_chunk(rows, bounds, EIGHT, n_final, 3) == batch


def test_whole_staged_chunk_agrees_with_the_chunks_of_a_fresh_store():
    """On a new store (every unit a whole final chunk), a unit is moved exactly when it holds
    one whole staged batch: all of its files kept, in order."""
    chunk, n = 3, 8
    plan_batches = [[f"f{i}" for i in range(b, min(b + chunk, n))] for b in range(0, n, chunk)]
    for rejected in itertools.chain.from_iterable(
        itertools.combinations(range(n), r) for r in range(3)
    ):
        accepted = [i for i in range(n) if i not in rejected]
        n_final = len(accepted)
        for start in range(0, n_final, chunk):
            stop = min(start + chunk, n_final)
            rows = accepted[start:stop]
            whole = {
                b
                for b, files in enumerate(plan_batches)
                if rows == list(range(b * chunk, b * chunk + len(files)))
            }
            assert icommit._whole_staged_chunk(
                rows, (start, stop), plan_batches, n_final, chunk
            ) == (whole.pop() if whole else None), (rejected, start)


# -- the staged chunks moved into a real store ------------------------------------------------
NAMES = ("a.png", "b.png", "c.png", "d.png", "e.png", "f.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six colour photos in a folder, and their expected resized pixels (Pillow LANCZOS)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(31)
    for k, name in enumerate(NAMES):
        write_image(root / name, random_photo(rng, 20 + 3 * k, 30))
    expected = {n: reference.img_true(reference.load_rgb(root / n), SIZE) for n in NAMES}
    return root, expected


def _ingest(src, store, chunk_size):
    with dask.config.set(scheduler="sync"):
        ingest_folder(str(src), str(store), size=SIZE, chunk_size=chunk_size, progress=False)


def _stored(store) -> dict[str, np.ndarray]:
    with xr.open_zarr(store) as ds:
        return {str(s): ds["images"].values[i] for i, s in enumerate(ds["source"].values)}


def test_the_real_staging_and_final_arrays_have_the_same_chunk_bytes(photos, tmp_path):
    """The precondition of every move: ingest's own staging array and final store match."""
    src, _ = photos
    store = tmp_path / "images.zarr"
    _ingest(src, store, 2)
    params = IngestParams(str(src), SIZE, 0.995, 2)
    job = Job(str(src), str(tmp_path / "next.zarr"), params, 0, None, False)
    plan_new_files(job, ["x.png", "y.png", "z.png"], [])
    staging = zarr.open_array(job.staging, mode="r")
    final = zarr.open_array(str(store / "images"), mode="r")
    assert icommit._same_chunk_bytes(staging, final)


@pytest.mark.parametrize(
    ("n_first", "n_added", "chunk_size"),
    [
        (2, 2, 5),  # the store's chunks are 2 rows (as few as its images): nothing moved
        (3, 3, 3),  # grown by a whole batch at a chunk boundary: moved, rightly
        (4, 2, 3),  # one short batch inside a final chunk: not moved (it was, over old images)
        (5, 1, 4),
    ],
)
def test_a_grown_store_holds_every_image_in_its_row(photos, tmp_path, n_first, n_added, chunk_size):
    """Grown by fewer files than a chunk, inside a final chunk, each old and new image is the
    resized photo of its source (a staged chunk moved there as it is would shift them)."""
    src, expected = photos
    partial = tmp_path / "src"
    partial.mkdir()
    for name in NAMES[:n_first]:
        shutil.copy(src / name, partial / name)
    store = tmp_path / "images.zarr"
    _ingest(partial, store, chunk_size)
    assert sorted(_stored(store)) == list(NAMES[:n_first])
    for name in NAMES[n_first : n_first + n_added]:
        shutil.copy(src / name, partial / name)
    _ingest(partial, store, chunk_size)
    stored = _stored(store)
    assert list(stored) == list(NAMES[: n_first + n_added])
    for name, pixels in stored.items():
        np.testing.assert_array_equal(pixels, expected[name], err_msg=name)


class _CopyTasks(dask.callbacks.Callback):
    """The keys of the copy tasks (``pupsnr-copy-...``) that Dask's local scheduler runs."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def _pretask(self, key, dsk, state) -> None:
        if str(key).startswith("pupsnr-copy-"):
            self.keys.append(str(key))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_moved_chunk_files_take_one_task_per_worker_thread_not_one_per_chunk(
    photos, tmp_path, workers
):
    """Six whole one-file chunks moved into place: as many copy tasks as the scheduler runs at
    once (a task's round trip costs more than a move), each image still in its row."""
    src, expected = photos
    counter = _CopyTasks()
    with dask.config.set(scheduler="threads", num_workers=workers), counter:
        ingest_folder(str(src), str(tmp_path / "s.zarr"), size=SIZE, chunk_size=1, progress=False)
    assert len(counter.keys) == min(workers, len(NAMES)), counter.keys
    stored = _stored(tmp_path / "s.zarr")
    assert list(stored) == list(NAMES)
    for name, pixels in stored.items():
        np.testing.assert_array_equal(pixels, expected[name], err_msg=name)
