"""``store/integrity.py``: the cheap probes (unfinished, metadata, missing chunks) and the search
for the first damaged chunk, on copies of real stores ingested from the sample photos.

The command-level cases (each damage stops ``run``, ``report``, ... with one line; ``verify``
lists them all) are in ``test_damage.py`` and ``test_verify.py``; these pin each function's own
rules: what it reports, in which order, and what it leaves alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from pupsnr_dask import schema
from pupsnr_dask.store import integrity
from pupsnr_dask.store.fs import lock_path, partial_path

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")


@pytest.fixture()
def store(images_store, tmp_path):
    """A fresh copy of the ingested sample photos (14 images, chunks of 5: images/c/0..2)."""
    shutil.copytree(images_store, tmp_path / "d.zarr")
    return tmp_path / "d.zarr"


def _flip(path, at: int | None = None) -> None:
    """Flip every bit of one byte of a stored object (the middle one by default)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _files(store) -> set[str]:
    return {
        os.path.relpath(os.path.join(top, name), store).replace(os.sep, "/")
        for top, _, names in os.walk(store)
        for name in names
    }


# -- unfinished ------------------------------------------------------------------------------
def test_unfinished_is_none_without_a_partial_journal(store):
    assert integrity.unfinished(str(store)) is None
    assert integrity.unfinished(str(store.parent / "nothing.zarr")) is None


@pytest.mark.parametrize(
    ("plan", "command"),
    [
        ({"params": {"src": "/photos"}}, "ingest; rerun `pupsnr ingest /photos -o {store}`"),
        ({"images_store": "/w/d.zarr"}, "run; rerun `pupsnr run /w/d.zarr -o {store}`"),
        ({"params": {"src": 3}}, "ingest or run; rerun that command to finish it"),
        (None, "ingest or run; rerun that command to finish it"),
    ],
)
def test_unfinished_names_the_command_to_rerun_from_the_plan(tmp_path, plan, command):
    store = str(tmp_path / "out.zarr")  # the store itself need not exist yet
    os.mkdir(partial_path(store))
    if plan is not None:
        with open(f"{partial_path(store)}/plan.json", "w") as f:
            json.dump(plan, f)
    why = integrity.unfinished(store)
    assert why.startswith(f"{store!r} is unfinished: {partial_path(store)!r} holds the work")
    assert command.format(store=store) in why
    assert "may be writing it" not in why  # no lock file: no holder named


def test_unfinished_names_the_lock_holder(tmp_path):
    store = str(tmp_path / "out.zarr")
    os.mkdir(partial_path(store))
    with open(lock_path(store), "w") as f:
        json.dump({"pid": 4242, "host": "box", "started": "noon"}, f)
    assert integrity.unfinished(store).endswith(
        "; pid 4242 on host 'box' since noon may be writing it"
    )


# -- listing and metadata --------------------------------------------------------------------
def test_list_keys_is_every_file_relative_with_slashes(store):
    keys = integrity.list_keys(str(store))
    assert keys == _files(store)
    assert {"zarr.json", "images/zarr.json", "images/c/2/0/0/0", "source/c/0"} <= keys


def test_list_keys_on_a_local_disk_is_what_fsspec_finds_symbolic_links_included(store, tmp_path):
    """The local listing (os.walk) and fsspec's ``find`` (object stores) agree: a linked
    file is a key, a linked folder one key (not followed: a link to a parent cannot make it
    loop); a store on ``memory://`` is listed."""
    import fsspec

    elsewhere = tmp_path / "elsewhere"
    shutil.move(store / "images" / "c" / "1", elsewhere)
    os.symlink(elsewhere, store / "images" / "c" / "1")
    os.symlink(store / "zarr.json", store / "linked.json")
    keys = integrity.list_keys(str(store))
    found = fsspec.filesystem("file").find(str(store))
    assert keys == {os.path.relpath(p, store) for p in found}
    assert {"images/c/1", "linked.json"} <= keys and "images/c/1/0/0/0" not in keys
    os.symlink(store, store / "images" / "loop")
    assert integrity.list_keys(str(store)) == keys | {"images/loop"}
    memory = fsspec.filesystem("memory")
    memory.pipe({"/ks.zarr/zarr.json": b"{}", "/ks.zarr/images/c/0/0/0/0": b"x"})
    try:
        assert integrity.list_keys("memory://ks.zarr") == {"zarr.json", "images/c/0/0/0/0"}
    finally:
        memory.rm("/ks.zarr", recursive=True)


def test_list_keys_leaves_out_a_folder_it_cannot_list_as_fsspec_does(store, tmp_path):
    """A chunk folder of mode 000 (unlistable even by root, with CAP_DAC_OVERRIDE dropped):
    left out of the local listing as fsspec's ``find`` leaves it out, its chunks missing."""
    from test_bad_input import permission_runner

    prefix, why = permission_runner(tmp_path / "probe")
    if prefix is None:
        pytest.skip(why)
    code = (
        "import json, os, sys, fsspec; from pupsnr_dask.store import integrity; r = sys.argv[1]; "
        "found = fsspec.filesystem('file').find(r); "
        "print(json.dumps([sorted(integrity.list_keys(r)), sorted(os.path.relpath(p, r) "
        "for p in found)]))"
    )
    locked = store / "images" / "c" / "1"
    locked.chmod(0)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", code, str(store)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = json.loads(proc.stdout)
    assert ours == theirs
    assert "images/c/0/0/0/0" in ours and not any(k.startswith("images/c/1/") for k in ours)


def test_metadata_defects_is_empty_for_a_sound_store(store):
    assert integrity.metadata_defects(str(store)) == []


def test_metadata_defects_names_each_bad_document_in_order(store):
    (store / "source/zarr.json").write_bytes(b'{"zarr_format": 3, "node')  # truncated
    (store / "split/zarr.json").write_text("[1, 2]")
    (store / "image/zarr.json").write_bytes(b"\xff\xfe{}")  # not UTF-8
    (store / "color_score/zarr.json").write_text("[" * 100_000)
    (store / "images/c/0/0/0/0").write_bytes(b"not json, not metadata")  # a chunk: not looked at
    found = integrity.metadata_defects(str(store))
    assert len(found) == 4
    assert found[0] == (
        "metadata file 'color_score/zarr.json' is nested too deeply to be read (damaged?)"
    )
    assert found[1].startswith("metadata file 'image/zarr.json' is not valid JSON (truncated?)")
    assert found[2].startswith("metadata file 'source/zarr.json' is not valid JSON (truncated?)")
    assert found[3] == "metadata file 'split/zarr.json' is not a JSON object"


def test_metadata_defects_reads_only_the_keys_it_is_given(store):
    (store / "split/zarr.json").write_text("[1, 2]")
    keys = integrity.list_keys(str(store)) - {"split/zarr.json"}
    assert integrity.metadata_defects(str(store), keys=keys) == []


# -- the grid of stored objects --------------------------------------------------------------
def test_chunk_regions_cover_the_array_chunk_by_chunk(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(7, 5), chunks=(3, 2), dtype="u1")
    expected = []
    for i in range(3):  # ceil(7 / 3) rows of chunks, ceil(5 / 2) columns
        for j in range(3):
            rows = slice(3 * i, min(7, 3 * i + 3))
            cols = slice(2 * j, min(5, 2 * j + 2))
            expected.append(((i, j), (rows, cols)))
    assert integrity.chunk_regions(arr) == expected


def test_chunk_regions_of_a_sharded_array_are_its_shards(tmp_path):
    arr = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=(10,), chunks=(2,), shards=(4,), dtype="u1"
    )
    regions = [region for _, region in integrity.chunk_regions(arr)]
    assert regions == [(slice(0, 4),), (slice(4, 8),), (slice(8, 10),)]


def test_missing_chunks_names_deleted_chunks_and_array_metadata(store):
    assert integrity.missing_chunks(str(store)) == []
    os.remove(store / "images/c/1/0/0/0")
    os.remove(store / "source/zarr.json")  # still listed in the consolidated metadata
    assert integrity.missing_chunks(str(store)) == ["images/c/1/0/0/0", "source/zarr.json"]


def test_missing_chunks_of_a_zarr2_store_use_its_chunk_keys(tmp_path):
    group = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    group.create_array("a", shape=(5, 4), chunks=(2, 4), dtype="u1")[:] = 7
    zarr.consolidate_metadata(str(tmp_path / "v2.zarr"))
    os.remove(tmp_path / "v2.zarr/a/1.0")
    assert integrity.missing_chunks(str(tmp_path / "v2.zarr")) == ["a/1.0"]


# -- damaged chunks --------------------------------------------------------------------------
def test_every_stored_chunk_ends_with_its_checksum_and_a_flip_breaks_it(store):
    chunks = [k for k in integrity.list_keys(str(store)) if "/c/" in k]
    assert len(chunks) == 9  # 3 of pixels, 6 of labels
    for key in chunks:
        assert integrity.checksum_matches((store / key).read_bytes()), key
    for at in (0, -5, -1):  # the zstd frame, its last byte, the checksum itself
        data = bytearray((store / "source/c/0").read_bytes())
        data[at] ^= 0x01
        assert not integrity.checksum_matches(bytes(data))
    assert not integrity.checksum_matches(b"abc")


def test_unreadable_chunks_lists_each_checksum_failure_but_the_skipped(store):
    assert integrity.unreadable_chunks(str(store)) == []
    _flip(store / "split/c/0")
    _flip(store / "images/c/1/0/0/0")
    assert integrity.unreadable_chunks(str(store)) == [
        "chunk 'images/c/1/0/0/0' is damaged (checksum mismatch)",
        "chunk 'split/c/0' is damaged (checksum mismatch)",
    ]
    assert integrity.unreadable_chunks(str(store), skip=(schema.IMAGES,)) == [
        "chunk 'split/c/0' is damaged (checksum mismatch)"
    ]


def test_chunk_problem_says_checksum_only_for_checksum_errors():
    assert integrity.chunk_problem("a/c/0", ValueError("Stored and computed checksum differ")) == (
        "chunk 'a/c/0' is damaged (checksum mismatch)"
    )
    assert integrity.chunk_problem("a/c/0", TypeError("bad dtype\nmore lines")) == (
        "chunk 'a/c/0' cannot be read: TypeError: bad dtype"
    )
    assert integrity.chunk_problem("a/c/0", OSError()) == "chunk 'a/c/0' cannot be read: OSError: "
    # a checksum named by an error of another kind is not a checksum failure
    assert "cannot be read: KeyError" in integrity.chunk_problem("a/c/0", KeyError("checksum"))


def test_first_damaged_chunk_is_none_for_a_sound_store(store):
    assert integrity.first_damaged_chunk(str(store)) is None


def test_first_damaged_chunk_searches_labels_before_pixels(store):
    _flip(store / "images/c/0/0/0/0")
    _flip(store / "split/c/0")
    assert integrity.first_damaged_chunk(str(store)) == (
        "chunk 'split/c/0' is damaged (checksum mismatch)"
    )
    assert integrity.first_damaged_chunk(str(store), skip=("split",)) == (
        "chunk 'images/c/0/0/0/0' is damaged (checksum mismatch)"
    )
    assert integrity.first_damaged_chunk(str(store), skip=("split", schema.IMAGES)) is None


def test_first_damaged_chunk_looks_only_at_the_rows_asked_for(store):
    _flip(store / "images/c/1/0/0/0")  # images 5 .. 9
    assert integrity.first_damaged_chunk(str(store), rows=(0, 5)) is None
    assert integrity.first_damaged_chunk(str(store), rows=(10, 14)) is None
    for rows in [(4, 6), (9, 10), (5, 10), (0, 14)]:
        found = integrity.first_damaged_chunk(str(store), rows=rows)
        assert found == "chunk 'images/c/1/0/0/0' is damaged (checksum mismatch)", rows


def test_first_damaged_chunk_names_a_missing_chunk(store):
    os.remove(store / "images/c/2/0/0/0")
    assert integrity.first_damaged_chunk(str(store)) == "chunk 'images/c/2/0/0/0' is missing"


def test_first_damaged_chunk_decodes_chunks_written_without_checksum(tmp_path):
    """Old stores: no checksum to check the raw bytes against, so each chunk is decoded."""
    path = tmp_path / "old.zarr"
    group = zarr.open_group(str(path), mode="w")
    values = np.arange(12, dtype="i8")
    group.create_array("a", shape=(12,), chunks=(6,), dtype="i8", compressors=[ZstdCodec()])[:] = (
        values
    )
    assert integrity.first_damaged_chunk(str(path)) is None  # sound, though no CRC at the end
    _flip(path / "a/c/1", at=0)  # the zstd magic number
    found = integrity.first_damaged_chunk(str(path))
    assert found.startswith("chunk 'a/c/1' cannot be read: ")
    assert "checksum" not in found


# -- the store named in a damage message -----------------------------------------------------
@pytest.fixture()
def pair(store, results_store, tmp_path):
    """A copy of the results whose recorded images store is the copy ``store``."""
    results = tmp_path / "r.zarr"
    shutil.copytree(results_store, results)
    group = zarr.open_group(str(results), mode="r+", use_consolidated=False)
    group.attrs["images_store"] = str(store)
    zarr.consolidate_metadata(str(results))
    return store, results


def test_recorded_images_store_is_the_string_attribute_or_none(pair, tmp_path):
    images, results = pair
    assert integrity.recorded_images_store(str(results), None) == str(images)
    assert integrity.recorded_images_store(str(images), None) is None  # no such attribute
    assert integrity.recorded_images_store(str(tmp_path / "nothing.zarr"), None) is None
    group = zarr.open_group(str(results), mode="r+", use_consolidated=False)
    group.attrs["images_store"] = ["not", "a", "string"]
    zarr.consolidate_metadata(str(results))
    assert integrity.recorded_images_store(str(results), None) is None


def test_damage_message_searches_the_recorded_images_store_after_the_results(pair, tmp_path):
    images, results = pair
    assert integrity.damage_message([str(results)]) is None
    _flip(images / "source/c/0")
    folder = tmp_path / "predictions"
    folder.mkdir()
    assert integrity.damage_message([None, str(folder), str(results)]) == (
        f"{str(images)!r}: chunk 'source/c/0' is damaged (checksum mismatch): "
        "`pupsnr verify` lists every defect"
    )
    assert integrity.damage_message([str(results)], skip=("source",)) is None


def test_damage_named_turns_decoding_damage_into_one_store_error(pair):
    images, results = pair
    _flip(images / "split/c/0")
    with pytest.raises(schema.StoreError) as raised:
        with integrity.damage_named(str(results)):
            try:
                raise ValueError("Stored and computed checksum do not match")
            except ValueError as inner:
                raise RuntimeError("task failed") from inner  # the damage is in the chain
    assert str(raised.value) == (
        f"{str(images)!r}: chunk 'split/c/0' is damaged (checksum mismatch): "
        "`pupsnr verify` lists every defect"
    )
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_damage_named_leaves_other_errors_alone(pair):
    images, results = pair
    _flip(images / "split/c/0")
    with pytest.raises(KeyError, match="no such scale"):
        with integrity.damage_named(str(results)):
            raise KeyError("no such scale")
    original = schema.StoreError("already named")
    with pytest.raises(schema.StoreError) as raised:
        with integrity.damage_named(str(results)):
            raise original
    assert raised.value is original


def test_damage_named_reraises_damage_it_cannot_find(pair):
    _, results = pair  # both sound
    with pytest.raises(RuntimeError, match="zstd decompress failed"):
        with integrity.damage_named(str(results), None):
            raise RuntimeError("zstd decompress failed")
