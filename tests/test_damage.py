"""Damage is found, not computed on (issue 10, section 4).

Every chunk pupsnr writes carries a CRC-32C checksum, so one flipped byte anywhere in a stored
chunk is an error, never a number. Each kind of damage, applied to real stores on disk, is
listed by ``verify`` (exit 1) and stops ``run``, ``grid``, ``report`` and ``advise`` with one
line naming it (exit 2), never a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from conftest import random_photo, write_image

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask.cli import main
from pupsnr_dask.ingest import pixels_compressors

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")

N_IMAGES, SIZE, CHUNK = 6, 32, 2  # images chunks c/0, c/1, c/2 of 2 images each


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """An images store of 6 images (chunks of 2), its results, and predictions for advise."""
    rng = np.random.default_rng(10)
    root = tmp_path_factory.mktemp("damage")
    for i in range(N_IMAGES):
        write_image(root / "src" / f"img{i}.png", random_photo(rng, 40, 50))
    with dask.config.set(scheduler="sync"):
        ingest(str(root / "src"), str(root / "d.zarr"), size=SIZE, chunk_size=CHUNK, progress=False)
        run(str(root / "d.zarr"), str(root / "r.zarr"), scales=[1, 2, 4], progress=False)
    stored = zarr.open_group(str(root / "d.zarr"), mode="r")
    for source, pixels in zip(stored["source"][:], stored["images"][:], strict=True):
        write_image(root / "pred" / str(source), pixels)
    return root


@pytest.fixture()
def stores(pristine, tmp_path):
    """A fresh copy of the pristine stores, the results linked to the copied images store."""
    for name in ("d.zarr", "r.zarr", "pred"):
        shutil.copytree(pristine / name, tmp_path / name)
    set_attrs(tmp_path / "r.zarr", images_store=str(tmp_path / "d.zarr"))
    return tmp_path


def set_attrs(store: Path, **attrs) -> None:
    """Change attributes of a store's group, in its own and its consolidated metadata."""
    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(store))


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nest_json(path: Path) -> None:
    """Deep enough that Python's json module raises RecursionError."""
    path.write_text("[" * 100_000 + "]" * 100_000)


def set_variant(store: Path, name: str) -> None:
    array = zarr.open_array(str(store / "variant"), mode="r+")
    values = array[:]
    values[-1] = name
    array[:] = values


# name: (which store, how to damage it, what the message must name)
DAMAGES = {
    "flipped byte in an images chunk": (
        "d.zarr",
        lambda p: flip_middle_byte(p / "images/c/1/0/0/0"),
        "chunk 'images/c/1/0/0/0' is damaged (checksum mismatch)",
    ),
    "flipped byte in a coordinate chunk": (
        "d.zarr",
        lambda p: flip_middle_byte(p / "color_score/c/0"),
        "chunk 'color_score/c/0' is damaged (checksum mismatch)",
    ),
    "flipped byte in a results chunk": (
        "r.zarr",
        lambda p: flip_middle_byte(p / "psnr/c/1/0/0"),
        "chunk 'psnr/c/1/0/0' is damaged (checksum mismatch)",
    ),
    "flipped byte in a results coordinate chunk": (
        "r.zarr",
        lambda p: flip_middle_byte(p / "resolution/c/0"),
        "chunk 'resolution/c/0' is damaged (checksum mismatch)",
    ),
    "truncated source chunk": (
        "d.zarr",
        lambda p: truncate(p / "source/c/0"),
        "chunk 'source/c/0' is damaged",
    ),
    "empty split chunk": (
        "d.zarr",
        lambda p: (p / "split/c/0").write_bytes(b""),
        "chunk 'split/c/0' is damaged",
    ),
    "empty color_score chunk": (
        "d.zarr",
        lambda p: (p / "color_score/c/0").write_bytes(b""),
        "chunk 'color_score/c/0' is damaged",
    ),
    "truncated results source chunk": (
        "r.zarr",
        lambda p: truncate(p / "source/c/0"),
        "chunk 'source/c/0' is damaged",
    ),
    "deeply nested JSON in the group's zarr.json": (
        "d.zarr",
        lambda p: nest_json(p / "zarr.json"),
        "metadata file 'zarr.json' is nested too deeply",
    ),
    "deeply nested JSON in an array's zarr.json": (
        "r.zarr",
        lambda p: nest_json(p / "mse/zarr.json"),
        "metadata file 'mse/zarr.json' is nested too deeply",
    ),
    "rejected attribute is a string": (
        "d.zarr",
        lambda p: set_attrs(p, rejected="oops"),
        "attribute 'rejected' must be a list of",
    ),
    "rejected attribute is a list of ints": (
        "d.zarr",
        lambda p: set_attrs(p, rejected=[1, 2]),
        "attribute 'rejected' must be a list of",
    ),
    "images_store attribute is a number": (
        "r.zarr",
        lambda p: set_attrs(p, images_store=7),
        "attribute 'images_store' must be a string",
    ),
    "images_store attribute is a list": (
        "r.zarr",
        lambda p: set_attrs(p, images_store=["d.zarr"]),
        "attribute 'images_store' must be a string",
    ),
    "unknown variant in results": (
        "r.zarr",
        lambda p: set_variant(p, "bogus"),
        "unknown variant 'bogus'",
    ),
}

COMMANDS = ("verify", "run", "grid", "report", "advise")


def argv(command: str, damaged: str, root: Path, address: str) -> list[str]:
    """The command line of ``command`` reading the damaged store (``d.zarr`` or ``r.zarr``)."""
    d, r = str(root / "d.zarr"), str(root / "r.zarr")
    cluster = ["--scheduler", address, "-q"]
    if command == "verify":
        return ["verify", str(root / damaged), "--recompute", "all", *cluster]
    if command == "run":  # a new output for damaged images, so that they are read
        out = str(root / "r2.zarr") if damaged == "d.zarr" else r
        return ["run", d, "-o", out, "--scales", "1,2,4", *cluster]
    if command == "grid":  # image 2 lives in images chunk c/1
        return ["grid", d, "--image", "2", "--scales", "1,2,4", "-o", str(root / "g.png")]
    if command == "report":  # --html reads every image of this small store
        return ["report", r, "--html", str(root / "r.html"), "--images", d, "--top", "3", "-q"]
    assert command == "advise"
    return ["advise", r, "--predictions", str(root / "pred"), "--variant", "gray", *cluster]


@pytest.mark.parametrize("command", COMMANDS)
def test_sound_stores_pass_every_command(command, stores, local_cluster, capsys):
    """The baseline of the matrix below: without damage, each command succeeds."""
    args = argv(command, "d.zarr", stores, local_cluster.scheduler.address)
    assert main(args) == 0, capsys.readouterr().err


# grid reads only an images store: it is not run on a damaged results store.
MATRIX = [
    (damage, command)
    for damage in DAMAGES
    for command in COMMANDS
    if not (command == "grid" and DAMAGES[damage][0] == "r.zarr")
]


@pytest.mark.parametrize(("damage", "command"), MATRIX)
def test_each_damage_is_listed_or_stops_each_command(
    damage, command, stores, local_cluster, capsys
):
    damaged, change, message = DAMAGES[damage]
    change(stores / damaged)
    rc = main(argv(command, damaged, stores, local_cluster.scheduler.address))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if command == "verify":
        assert rc == 1, out + err
        assert any(message in line for line in out.splitlines()), out
    else:
        assert rc == 2, out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pupsnr: error: "), err
        assert message in lines[0], err


def test_verify_of_results_names_the_damaged_chunk_of_its_images(stores, local_cluster, capsys):
    flip_middle_byte(stores / "d.zarr/images/c/1/0/0/0")
    address = local_cluster.scheduler.address
    rc = main(["verify", str(stores / "r.zarr"), "--recompute", "all", "--scheduler", address])
    out = capsys.readouterr().out
    assert rc == 1 and "Traceback" not in out
    assert (
        f"  - images 2 .. 3 cannot be recomputed: images store {str(stores / 'd.zarr')!r}: "
        "chunk 'images/c/1/0/0/0' is damaged (checksum mismatch)"
    ) in out.splitlines(), out


def test_a_flipped_byte_is_never_a_number(stores, local_cluster):
    """Without a checksum, zstd decoded the flipped chunk and run computed wrong PSNR."""
    flip_middle_byte(stores / "d.zarr/images/c/1/0/0/0")
    with pytest.raises(ValueError, match=r"chunk 'images/c/1/0/0/0' is damaged"):
        with dask.config.set(scheduler="sync"):
            run(str(stores / "d.zarr"), str(stores / "r2.zarr"), scales=[1, 2], progress=False)


def test_stores_written_before_checksums_still_open(stores, local_cluster, capsys):
    """zstd only, as pupsnr wrote them before: verify, run and grid still work on them."""
    import xarray as xr
    from zarr.codecs import ZstdCodec

    old = stores / "old.zarr"
    ds = xr.open_zarr(stores / "d.zarr").load()
    for var in ds.variables.values():
        var.encoding = {"compressors": (ZstdCodec(level=1),)}
    ds.to_zarr(old, consolidated=True, zarr_format=3)
    codecs = json.loads((old / "images/zarr.json").read_text())["codecs"]
    assert codecs[-1]["name"] == "zstd"
    address = local_cluster.scheduler.address
    assert main(["verify", str(old), "--scheduler", address, "-q"]) == 0
    args = ["run", str(old), "-o", str(stores / "r2.zarr"), "--scales", "1,2", "-q"]
    assert main([*args, "--scheduler", address]) == 0
    assert main(["grid", str(old), "--image", "0", "-o", str(stores / "g.png")]) == 0
    capsys.readouterr()


def test_every_array_written_has_a_checksum_last(pristine):
    from zarr.codecs import Crc32cCodec, ZstdCodec

    for store in ("d.zarr", "r.zarr"):
        for path in sorted((pristine / store).glob("*/zarr.json")):
            codecs = json.loads(path.read_text())["codecs"]
            assert codecs[-1] == {"name": "crc32c"}, (path, codecs)
    assert pixels_compressors() == (ZstdCodec(level=1), Crc32cCodec())
