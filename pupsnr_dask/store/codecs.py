"""The codecs of every array pupsnr writes, and zarr's one warning that pupsnr silences."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: zstd level of every array but the pixels (zarr's default level).
ZSTD_LEVEL = 0


#: The name of the checksum codec that ends the codecs of every array pupsnr writes.
CHECKSUM_CODEC = "crc32c"


def compressors(level: int = ZSTD_LEVEL) -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of every array pupsnr writes: zstd, then a CRC-32C checksum.

    The checksum covers every stored byte of a chunk, so that one flipped byte (a bad disk, a
    truncated upload) is an error when the chunk is read, never wrong numbers: zstd alone
    decodes most such chunks without complaint. It costs 4 bytes per chunk and about 1 ms per
    6 MB chunk each way (README, "Reliability"); zstd's own checksum was as cheap but misses
    flips in its frame header.

    Examples
    --------
    >>> [c.to_dict()["name"] for c in compressors(1)]
    ['zstd', 'crc32c']
    """
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(level=level), Crc32cCodec())


def ends_with_checksum(codecs: Any) -> bool:
    """True when a sequence of Zarr codecs (objects or their JSON) ends with the checksum.

    Examples
    --------
    >>> ends_with_checksum(compressors()), ends_with_checksum([{"name": "zstd"}])
    (True, False)
    """
    if not codecs or isinstance(codecs, str | dict):
        return False
    last = codecs[-1]
    name = last.get("name") if isinstance(last, dict) else last.to_dict().get("name")
    return bool(name == CHECKSUM_CODEC)


@contextlib.contextmanager
def quiet_zarr_warnings() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not part of the v3 spec."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield
