"""``ingest/stage.py``: the staged-batch marker, one entry loaded, a batch written to staging.

The command-level cases (a corpus of bad files ingested, killed batches resumed) are in
``test_bad_input.py`` and ``test_resume.py``; these hold the module's own pieces to their
contract: :class:`StagedBatch` JSON, :func:`load_source` on every kind of entry of a real folder,
and :func:`_write_batch`, :func:`staged_markers` and :func:`_staged_intact` on a real staging
array in a real journal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import numpy as np
import pytest
import reference
import zarr
from conftest import random_photo, write_image
from PIL import Image
from test_bad_input import permission_runner

from pupsnr_dask.ingest import stage as istage
from pupsnr_dask.ingest.plan import STAGED, Job, batches, plan_new_files
from pupsnr_dask.kernels.image import Record
from pupsnr_dask.store.journal import IngestParams, mark_done, marker_path, read_done

SIZE, THRESHOLD = 32, 0.995
WORKTREE = Path(__file__).resolve().parent.parent


def _digest(image: np.ndarray) -> str:
    """An independent digest of one image's pixels: SHA-256 of its C-order bytes, 128 bits."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:32]


def _marker(n: int = 3) -> istage.StagedBatch:
    records = tuple(
        Record(f"d/{i}.png", i % 2 == 0, "" if i % 2 == 0 else "not colour", 0.25 * i, 10 + i, 20)
        for i in range(n)
    )
    digests = tuple(f"{i:032x}" for i in range(n))
    return istage.StagedBatch(tuple(r.source for r in records), records, digests)


# -- StagedBatch JSON -------------------------------------------------------------------------
def test_staged_batch_round_trips_through_its_json_document():
    marker = _marker()
    doc = json.loads(json.dumps(marker.to_json(), allow_nan=True))  # as the journal stores it
    assert set(doc) == {"sources", "rows", "digests"}
    assert istage.StagedBatch.from_json(doc) == marker


def test_staged_batch_keeps_a_nan_colour_score():
    records = (Record("flat.png", False, "not colour: a channel is constant", math.nan, 4, 4),)
    marker = istage.StagedBatch(("flat.png",), records, ("f" * 32,))
    back = istage.StagedBatch.from_json(json.loads(json.dumps(marker.to_json(), allow_nan=True)))
    assert back is not None and math.isnan(back.records[0].color_score)
    assert back.records[0].reason == records[0].reason


def test_an_older_marker_with_a_batch_sha256_and_no_digests_is_not_taken_for_one():
    doc = _marker().to_json()
    del doc["digests"]
    doc["sha256"] = "ab" * 32  # what markers held before the rows' digests
    assert istage.StagedBatch.from_json(doc) is None


def _without(key):
    def change(doc):
        del doc[key]

    return change


def _set(key, value):
    def change(doc):
        doc[key] = value

    return change


def _set_row(key, value):
    def change(doc):
        doc["rows"][1][key] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        _without("sources"),
        _without("rows"),
        _without("digests"),
        _set("rows", "not rows"),
        _set("rows", [{"source": "x"}, 3, None]),
        _set("sources", ["d/0.png", "d/1.png"]),  # one source fewer than rows
        _set("digests", ["0" * 32]),  # digests, but not one per row
        _set("digests", 7),
        _set("digests", "ab"),  # a string, not one digest a row
        _set_row("accepted", "yes"),
        _set_row("accepted", 1),
        _set_row("color_score", "0.3"),
        _set_row("color_score", None),
        _set_row("unknown_key", 1),
    ],
)
def test_a_damaged_marker_is_not_taken_for_one(change):
    doc = json.loads(json.dumps(_marker().to_json()))
    change(doc)
    assert istage.StagedBatch.from_json(doc) is None


@pytest.mark.parametrize("doc", [None, [], "marker", 3, {"rows": None}])
def test_what_is_not_a_json_object_is_not_a_marker(doc):
    assert istage.StagedBatch.from_json(doc) is None


def test_a_row_without_its_optional_fields_gets_the_records_defaults():
    doc = {"sources": ["a.png"], "rows": [{"source": "a.png", "accepted": False}], "digests": ["x"]}
    back = istage.StagedBatch.from_json(doc)
    assert back is not None and back.records[0].reason == "" and back.records[0].width == 0
    assert math.isnan(back.records[0].color_score)


# -- load_source on every kind of entry -------------------------------------------------------
@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    """A real folder with one entry of each kind, and the photo kept in it."""
    root = tmp_path_factory.mktemp("entries")
    rng = np.random.default_rng(3)
    photo = random_photo(rng, 27, 41)
    write_image(root / "photo.png", photo)
    write_image(root / "gray.png", random_photo(rng, 20, 20)[..., 1])
    (root / "sub").mkdir()
    write_image(root / "sub" / "inner.png", photo)
    os.symlink("sub", root / "link_to_sub.png", target_is_directory=True)
    os.symlink("photo.png", root / "link_to_photo.png")
    os.mkfifo(root / "pipe.png")
    (root / "notes.txt").write_text("not an image")
    (root / "photo.PNG.bak").write_bytes((root / "photo.png").read_bytes())
    (root / "empty.jpg").write_bytes(b"")
    return root, photo


def _load(root: Path, source: str):
    fs, path = fsspec.core.url_to_fs(str(root))
    return istage.load_source(fs, path, source, SIZE, THRESHOLD)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("sub/", "cannot list folder: it failed while SRC was listed"),
        ("link_to_sub.png", "symbolic link to a folder: not followed"),
        ("pipe.png", "not a regular file (named pipe, socket or device)"),
        ("notes.txt", "not an image file extension"),
        ("photo.PNG.bak", "not an image file extension"),
        ("empty.jpg", "cannot decode: empty file"),
        ("missing.png", "cannot read: not found (it vanished, or is a broken symbolic link)"),
        ("missing/", "cannot list folder: not found (it vanished, or is a broken symbolic link)"),
    ],
)
def test_load_source_rejects_each_kind_of_entry_with_its_reason(entries, source, reason):
    root, _ = entries
    image, record = _load(root, source)  # a named pipe opened for reading would block here
    assert image is None
    assert record == Record(source, False, reason)


def test_load_source_keeps_a_real_photo_resized_like_pillow_lanczos(entries):
    root, photo = entries
    for source in ("photo.png", "link_to_photo.png", "sub/inner.png"):  # a link to a file: followed
        image, record = _load(root, source)
        expected = np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.LANCZOS))
        assert image is not None and image.dtype == np.uint8
        np.testing.assert_array_equal(image, expected)
        keep, score = reference.is_colour(Image.fromarray(photo), THRESHOLD)
        assert keep and record.accepted and record.reason == ""
        assert record.source == source
        assert (record.width, record.height) == (41, 27)
        assert record.color_score == pytest.approx(score, abs=1e-9)


def test_load_source_rejects_a_gray_photo_with_its_score(entries):
    root, _ = entries
    image, record = _load(root, "gray.png")
    with Image.open(root / "gray.png") as img:
        _, score = reference.is_colour(img.convert("RGB"), THRESHOLD)
    assert image is None and not record.accepted
    assert record.reason.startswith("not colour")
    assert record.color_score == pytest.approx(score, abs=1e-9)


UNREADABLE = textwrap.dedent(
    """
    import json, sys
    import fsspec
    from pupsnr_dask.ingest.stage import load_source
    fs, root = fsspec.core.url_to_fs(sys.argv[1])
    out = {}
    for source in ("locked.png", "closed/"):
        image, record = load_source(fs, root, source, 32, 0.995)
        out[source] = [image is None, record.accepted, record.reason]
    print(json.dumps(out))
    """
)


def test_load_source_rejects_an_unreadable_file_and_an_unlistable_folder(tmp_path):
    """Mode 000 entries, loaded in a real process that file permissions apply to."""
    prefix, why = permission_runner(tmp_path / "probe")
    if prefix is None:
        pytest.skip(why)
    root = tmp_path / "src"
    write_image(root / "locked.png", random_photo(np.random.default_rng(1), 20, 20))
    write_image(root / "closed" / "hidden.png", random_photo(np.random.default_rng(2), 20, 20))
    (root / "locked.png").chmod(0)
    (root / "closed").chmod(0)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", UNREADABLE, str(root)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=WORKTREE,
            env={**os.environ, "PYTHONPATH": str(WORKTREE)},
        )
    finally:
        (root / "locked.png").chmod(0o644)
        (root / "closed").chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["locked.png"] == [True, False, "cannot read: Permission denied"]
    assert got["closed/"] == [True, False, "cannot list folder: Permission denied"]


# -- _write_batch, staged_markers, _staged_intact on a real staging array -------------------
@pytest.fixture
def planned(tmp_path):
    """A planned ingest of 5 files in batches of 2 (staging array and plan in the journal)."""
    params = IngestParams(str(tmp_path / "src"), SIZE, THRESHOLD, 2)
    job = Job(str(tmp_path / "src"), str(tmp_path / "s.zarr"), params, 0, None, False)
    plan = plan_new_files(job, [f"f{i}.png" for i in range(5)], [])
    return job, plan


def _loaded(rng, sources, kept):
    out = []
    for source, keep in zip(sources, kept, strict=True):
        if keep:
            image = random_photo(rng, SIZE, SIZE)
            out.append((image, Record(source, True, "", 0.5, SIZE, SIZE)))
        else:
            out.append((None, Record(source, False, "not colour: score >= 0.995", 0.999, 5, 6)))
    return out


def _write_all_kept(job, b, sources, rng):
    istage._write_batch(job, b, sources, _loaded(rng, sources, [True] * len(sources)))


def test_write_batch_puts_its_pixels_in_its_rows_and_zeros_for_the_rejected(planned):
    job, plan = planned
    rng = np.random.default_rng(8)
    zarr.open_array(job.staging, mode="r+")[:] = 9  # what another batch's rows hold
    b = 1
    sources = batches(plan)[b]  # f2, f3
    loaded = _loaded(rng, sources, [False, True])
    records = istage._write_batch(job, b, sources, loaded)
    assert records == tuple(r for _, r in loaded)
    pixels = np.asarray(zarr.open_array(job.staging, mode="r")[:])
    assert not pixels[2].any()  # rejected: the zeros of no image
    np.testing.assert_array_equal(pixels[3], loaded[1][0])
    assert (pixels[[0, 1, 4]] == 9).all()  # the other batches' rows as they were


def test_write_batch_leaves_a_marker_with_the_records_and_the_pixels_digests(planned):
    job, plan = planned
    rng = np.random.default_rng(9)
    b = 2
    sources = batches(plan)[b]  # the short last batch: f4
    loaded = _loaded(rng, sources, [True])
    istage._write_batch(job, b, sources, loaded)
    doc = read_done(job.store, [b], step=STAGED)[b]
    marker = istage.StagedBatch.from_json(doc)
    assert marker is not None
    assert marker.sources == tuple(sources)
    assert marker.records == tuple(r for _, r in loaded)
    assert marker.digests == (_digest(loaded[0][0]),)
    assert Path(marker_path(job.store, b, STAGED)).is_file()


def test_the_digest_of_a_rejected_row_is_that_of_zero_pixels(planned):
    job, plan = planned
    sources = batches(plan)[0]
    istage._write_batch(job, 0, sources, _loaded(np.random.default_rng(1), sources, [False] * 2))
    marker = istage.StagedBatch.from_json(read_done(job.store, [0], step=STAGED)[0])
    zero = _digest(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert marker.digests == (zero, zero)


def test_staged_markers_are_those_written_for_the_planned_batches(planned):
    job, plan = planned
    rng = np.random.default_rng(10)
    plan_batches = batches(plan)
    assert istage.staged_markers(job, plan) == {}
    for b in (0, 2):
        _write_all_kept(job, b, plan_batches[b], rng)
    found = istage.staged_markers(job, plan)
    assert sorted(found) == [0, 2]
    assert found[0].sources == tuple(plan_batches[0])


def test_staged_markers_ignore_a_marker_of_other_files_and_a_damaged_one(planned):
    job, plan = planned
    rng = np.random.default_rng(12)
    plan_batches = batches(plan)
    for b in range(3):
        _write_all_kept(job, b, plan_batches[b], rng)
    other = _marker(2).to_json()  # a marker of other files at batch 0's place
    mark_done(job.store, 0, other, step=STAGED)
    Path(marker_path(job.store, 1, STAGED)).write_text('{"sources": [')  # cut short
    assert sorted(istage.staged_markers(job, plan)) == [2]


def test_staged_intact_is_true_for_what_was_written(planned):
    job, plan = planned
    rng = np.random.default_rng(13)
    plan_batches = batches(plan)
    for b in range(3):
        sources = plan_batches[b]
        istage._write_batch(job, b, sources, _loaded(rng, sources, [True] * len(sources)))
        marker = istage.staged_markers(job, plan)[b]
        assert istage._staged_intact(job, b, marker.digests)


def _staged(planned, seed):
    job, plan = planned
    sources = batches(plan)[1]
    loaded = _loaded(np.random.default_rng(seed), sources, [True, True])
    istage._write_batch(job, 1, sources, loaded)
    return job, istage.staged_markers(job, plan)[1]


def test_staged_intact_is_false_when_a_pixel_changed(planned):
    job, marker = _staged(planned, 14)
    staging = zarr.open_array(job.staging, mode="r+")
    staging[3, 5, 5, 0] = (int(staging[3, 5, 5, 0]) + 1) % 256
    assert not istage._staged_intact(job, 1, marker.digests)


def test_staged_intact_is_false_when_the_chunk_file_is_gone(planned):
    job, marker = _staged(planned, 15)
    chunk = Path(job.staging) / "c" / "1" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.unlink()
    assert not istage._staged_intact(job, 1, marker.digests)


def test_staged_intact_is_false_when_the_chunk_file_is_damaged(planned):
    job, marker = _staged(planned, 16)
    chunk = Path(job.staging) / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert not istage._staged_intact(job, 1, marker.digests)


def test_staged_intact_is_false_against_another_digest_or_without_staging(planned):
    job, marker = _staged(planned, 17)
    assert not istage._staged_intact(job, 1, ("0" * 32, "1" * 32))
    assert not istage._staged_intact(job, 1, marker.digests[::-1])  # the rows swapped
    gone = Job(job.src, job.store + "-other", job.params, 0, None, False)
    assert not istage._staged_intact(gone, 1, marker.digests)
