"""Messy input folders and damaged stores: every file gets an answer, every store a diagnosis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dask
import fsspec
import numpy as np
import pytest
import xarray as xr
from badfiles import build_corpus, lanczos, png_bytes, restore_permissions
from conftest import random_photo, write_image

from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask.cli import main
from pupsnr_dask.ingest import list_files, load_source
from pupsnr_dask.kernels.image import TooManyPixelsError, decode_rgb
from pupsnr_dask.schema import StoreError, json_attr
from pupsnr_dask.verify import verify_store

SIZE = 32
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")


def permission_runner(probe: Path) -> tuple[list[str] | None, str]:
    """A command prefix under which a mode 000 file is unreadable, or (None, why not).

    Root reads everything (CAP_DAC_OVERRIDE); ``setpriv`` drops that capability for the
    command, so the unreadable-file cases are real even when the tests run as root.
    """
    probe.write_text("secret")
    probe.chmod(0)
    try:
        if os.geteuid() != 0:
            return [], ""
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return None, "tests run as root and setpriv is not installed to drop CAP_DAC_OVERRIDE"
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
        check = subprocess.run([*prefix, "cat", str(probe)], capture_output=True, timeout=30)
        if check.returncode == 0:
            return None, "setpriv could not drop CAP_DAC_OVERRIDE here (mode 000 stays readable)"
        return prefix, ""
    finally:
        probe.unlink()


def test_every_bad_file_gets_an_answer_that_the_store_records_and_the_cli_counts(tmp_path):
    prefix, why = permission_runner(tmp_path / "probe")
    src, store = tmp_path / "corpus", tmp_path / "bad.zarr"
    cases = build_corpus(src, SIZE, permissions=prefix is not None)
    command = [*(prefix or []), sys.executable, "-m", "pupsnr_dask", "ingest", str(src)]
    command += ["-o", str(store), "--size", str(SIZE), "--chunk-size", "4", "--n-workers", "1"]
    try:  # a named pipe opened for reading, or a link loop followed, would hang: time out
        proc = subprocess.run([*command, "-q"], capture_output=True, text=True, timeout=300)
    finally:
        restore_permissions(src)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ds = xr.open_zarr(store)
    stored = {str(s): i for i, s in enumerate(ds["source"].values)}
    rejected = {r["source"]: r["reason"] for r in json_attr(ds.attrs, "rejected")}
    assert set(stored) | set(rejected) == set(cases), "a file was dropped silently, or invented"
    assert not set(stored) & set(rejected)
    for case in cases.values():
        if case.kept:
            i = stored[case.source]
            np.testing.assert_array_equal(ds["images"][i].values, case.pixels, err_msg=case.what)
            size = (int(ds["original_width"][i]), int(ds["original_height"][i]))
            assert size == case.size, case.what
        else:
            assert rejected[case.source].startswith(case.reason), (case.what, rejected)
    assert ds.attrs["n_files"] == len(cases)
    assert f"{len(cases)} files, {len(stored)} colour images stored in" in proc.stdout
    for reason, count in Counter(rejected.values()).items():
        assert f"  rejected {count}: {reason}\n" in proc.stdout
    with dask.config.set(scheduler="sync"):
        assert verify_store(str(store), progress=False).ok
    if prefix is None:
        pytest.skip(f"unreadable file and folder not tried: {why}")


def test_files_that_vanish_or_change_between_listing_and_decoding(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "src"
    for name in ("a.png", "b.png", "c.png"):
        write_image(src / name, random_photo(rng, 30, 40))
    listed = list_files(str(src))
    assert listed == ["a.png", "b.png", "c.png"]
    (src / "a.png").unlink()  # vanished
    changed = random_photo(rng, 20, 24)
    write_image(src / "b.png", changed)  # rewritten: what is read is what is stored
    data = (src / "c.png").read_bytes()
    (src / "c.png").write_bytes(data[: len(data) // 2])  # cut while being written
    fs, root = fsspec.core.url_to_fs(str(src))
    answers = {s: load_source(fs, root, s, SIZE, 0.995) for s in listed}
    assert answers["a.png"][0] is None
    assert answers["a.png"][1].reason.startswith("cannot read: not found (it vanished")
    np.testing.assert_array_equal(answers["b.png"][0], lanczos(changed, SIZE))
    assert (answers["b.png"][1].width, answers["b.png"][1].height) == (24, 20)
    assert answers["c.png"][1].reason == "cannot decode: truncated image data"


def test_declared_size_is_checked_before_any_pixel_is_decoded(tmp_path):
    # Between Pillow's warning and error limits: Pillow alone would decode 90 million pixels.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(10_000, 9_000, 8, 2, b"\x00" * 64))
    with pytest.raises(TooManyPixelsError, match="10000 x 9000 pixels"):
        decode_rgb(str(path))
    ok = tmp_path / "ok.png"
    write_image(ok, random_photo(np.random.default_rng(0), 20, 20))
    assert decode_rgb(str(ok), max_pixels=400).size == (20, 20)
    with pytest.raises(TooManyPixelsError):
        decode_rgb(str(ok), max_pixels=399)


# -- damaged or foreign stores given to run and report -----------------------------------------
@pytest.fixture(scope="module")
def good_stores(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("good")
    for i in range(7):
        write_image(root / "src" / f"img{i}.png", random_photo(rng, 30, 40))
    with dask.config.set(scheduler="sync"):
        ingest(str(root / "src"), str(root / "d.zarr"), size=SIZE, chunk_size=3, progress=False)
        run(str(root / "d.zarr"), str(root / "r.zarr"), scales=[1, 2, 4], progress=False)
    return root / "d.zarr", root / "r.zarr"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rewrite(store: Path, change) -> None:
    ds = change(xr.open_zarr(store).load())
    shutil.rmtree(store)
    ds.to_zarr(store, consolidated=True)


DAMAGES = {
    "deleted chunk": lambda p: (p / "images/c/1/0/0/0").unlink(),
    "truncated array metadata": lambda p: _truncate(p / "images/zarr.json"),
    "truncated root metadata": lambda p: _truncate(p / "zarr.json"),
    "deleted coordinate array": lambda p: shutil.rmtree(p / "split"),
    "missing coordinate": lambda p: _rewrite(p, lambda ds: ds.drop_vars("split")),
    "wrong dtype": lambda p: _rewrite(p, lambda ds: ds.assign(images=ds.images.astype("f4"))),
    "unfinished": lambda p: (p.parent / (p.name + ".partial")).mkdir(),
    "not square": lambda p: _rewrite(p, lambda ds: ds.isel(x=slice(0, 16))),
}
MESSAGES = {
    "deleted chunk": "are missing (images/c/1/0/0/0)",
    "truncated array metadata": "metadata file 'images/zarr.json' is not valid JSON",
    "truncated root metadata": "metadata file 'zarr.json' is not valid JSON",
    "deleted coordinate array": "are missing (split/zarr.json)",
    "missing coordinate": "lacks coordinates ['split']",
    "wrong dtype": "images has dtype float32, expected uint8",
    "unfinished": "is unfinished",
    "not square": "images must be square",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_run_refuses_a_damaged_images_store_naming_the_defect(
    damage, good_stores, tmp_path, capsys
):
    store = tmp_path / "d.zarr"
    shutil.copytree(good_stores[0], store)
    DAMAGES[damage](store)
    assert main(["run", str(store), "-o", str(tmp_path / "r.zarr"), "-q"]) == 2
    err = capsys.readouterr().err
    assert MESSAGES[damage] in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.zarr").exists()


RESULT_DAMAGES = {
    "deleted chunk": (lambda p: (p / "psnr/c/0/0/0").unlink(), "are missing (psnr/c/0/0/0)"),
    "garbage chunk": (
        lambda p: (p / "mse/c/1/0/0").write_bytes(b"garbage" * 9),
        "chunk 'mse/c/1/0/0' is damaged (checksum mismatch)",
    ),
    "truncated metadata": (
        lambda p: _truncate(p / "psnr/zarr.json"),
        "metadata file 'psnr/zarr.json' is not valid JSON",
    ),
    "wrong dtype": (
        lambda p: _rewrite(p, lambda ds: ds.assign(psnr=ds.psnr.astype("f4"))),
        "psnr has dtype float32, expected float64",
    ),
    "missing coordinate": (
        lambda p: _rewrite(p, lambda ds: ds.drop_vars("resolution")),
        "lacks coordinates ['resolution']",
    ),
    "an images store": (lambda p: None, "is a pupsnr 'images' store; expected a pupsnr 'psnr'"),
}


@pytest.mark.parametrize("damage", list(RESULT_DAMAGES))
def test_report_refuses_a_damaged_results_store_naming_the_defect(
    damage, good_stores, tmp_path, capsys
):
    results = tmp_path / "r.zarr"
    shutil.copytree(good_stores[0 if damage == "an images store" else 1], results)
    change, message = RESULT_DAMAGES[damage]
    change(results)
    assert main(["report", str(results)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_names_the_store_when_an_images_chunk_cannot_be_decoded(good_stores, tmp_path):
    store = tmp_path / "d.zarr"
    shutil.copytree(good_stores[0], store)
    (store / "images/c/1/0/0/0").write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 9)
    with dask.config.set(scheduler="sync"), pytest.raises(StoreError) as info:
        run(str(store), str(tmp_path / "r.zarr"), progress=False)
    assert str(store) in str(info.value)
    assert "chunk 'images/c/1/0/0/0' is damaged (checksum mismatch)" in str(info.value)
    assert json.loads((tmp_path / "r.zarr.partial/plan.json").read_text())["n_images"] == 7
