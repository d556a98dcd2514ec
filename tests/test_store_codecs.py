"""``store/codecs.py``: zstd then CRC-32C on every array, the checksum test, the one quiet warning.

The command-level cases (every array of ingest's and run's stores ends with the checksum, a
flipped byte stops each command, stores written before checksums still open) are in
``test_damage.py``; these hold the module's own functions to their rules on real Zarr arrays
on disk.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from pupsnr_dask.store import codecs


def _array(path, compressors) -> zarr.Array:
    """A real 2-chunk uint16 array on disk, written with ``compressors``."""
    arr = zarr.create_array(
        str(path), shape=(64, 64), chunks=(32, 64), dtype="u2", compressors=compressors
    )
    arr[:] = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    return arr


def test_compressors_are_zstd_at_the_level_given_then_crc32c():
    default = codecs.compressors()
    assert [type(c) for c in default] == [ZstdCodec, Crc32cCodec]
    assert default[0].level == codecs.ZSTD_LEVEL == 0
    assert codecs.compressors(7)[0].level == 7
    assert default[-1].to_dict()["name"] == codecs.CHECKSUM_CODEC == "crc32c"


def test_an_array_written_with_them_records_zstd_then_crc32c_and_reads_back(tmp_path):
    arr = _array(tmp_path / "a.zarr", codecs.compressors(3))
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    names = [c["name"] for c in meta["codecs"]]
    assert names == ["bytes", "zstd", "crc32c"]
    assert meta["codecs"][1]["configuration"]["level"] == 3
    assert codecs.ends_with_checksum(meta["codecs"])
    again = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    np.testing.assert_array_equal(again[:], arr[:])
    assert codecs.ends_with_checksum(again.metadata.codecs)  # the codec objects zarr gives


@pytest.mark.parametrize("where", [0, 5, -5, -1])  # zstd's frame header, its data, the CRC
def test_a_flipped_byte_anywhere_in_a_chunk_is_an_error_when_read(tmp_path, where):
    _array(tmp_path / "a.zarr", codecs.compressors())
    chunk = tmp_path / "a.zarr" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[where] ^= 0x10
    chunk.write_bytes(bytes(raw))
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    np.testing.assert_array_equal(arr[:32], np.arange(32 * 64).reshape(32, 64))  # the other
    with pytest.raises(ValueError, match="Stored and computed checksum do not match"):
        arr[32:]


@pytest.mark.parametrize(
    "value",
    [
        codecs.compressors(),
        list(codecs.compressors(5)),
        (Crc32cCodec(),),
        [{"name": "zstd"}, {"name": "crc32c"}],
        [{"name": "bytes", "configuration": {}}, {"name": "crc32c", "configuration": {}}],
    ],
)
def test_ends_with_checksum_is_true_for_codecs_or_json_ending_with_crc32c(value):
    assert codecs.ends_with_checksum(value) is True


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        (),
        [{"name": "zstd"}],
        (ZstdCodec(),),
        (Crc32cCodec(), ZstdCodec()),  # a checksum that is not last checks nothing stored
        [{"name": "crc32c"}, {"name": "zstd"}],
        [BloscCodec()],
        "crc32c",  # a string is not a sequence of codecs
        {"name": "crc32c"},  # nor is one codec's JSON
        [{"configuration": {}}],  # no name
    ],
)
def test_ends_with_checksum_is_false_for_anything_else(value):
    assert codecs.ends_with_checksum(value) is False


def _consolidate_and_open(path) -> None:
    """Consolidate and open a real v3 group (zarr's notice each time), then warn otherwise."""
    zarr.consolidate_metadata(str(path))
    zarr.open_consolidated(str(path))
    warnings.warn("another warning", UserWarning, stacklevel=1)


def test_quiet_zarr_warnings_silences_only_the_consolidated_metadata_notice(tmp_path):
    path = tmp_path / "g.zarr"
    zarr.open_group(str(path), mode="w").create_array("a", shape=(2,), dtype="u1")
    notice = "Consolidated metadata is currently not part"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _consolidate_and_open(path)
        loud = [str(w.message) for w in caught]
        del caught[:]
        with codecs.quiet_zarr_warnings():
            _consolidate_and_open(path)
        quiet = [str(w.message) for w in caught]
        del caught[:]
        _consolidate_and_open(path)
        after = [str(w.message) for w in caught]
    assert any(m.startswith(notice) for m in loud)  # zarr still gives it: worth silencing
    assert quiet == ["another warning"]  # only that notice is silenced
    assert any(m.startswith(notice) for m in after)  # and only inside the block
