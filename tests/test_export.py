"""`pupsnr export`: the per-image table in long form, read back and compared value by value."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pupsnr_dask import export, open_results
from pupsnr_dask.cli import main

COLUMNS = ["image", "source", "split", "variant", "scale", "resolution", "psnr", "mse"]


def expected_table(results_store) -> pd.DataFrame:
    """The store's values in long form, by xarray's own ``to_dataframe`` (not by export.py)."""
    ds = xr.open_zarr(results_store).load()
    frame = ds[["psnr", "mse"]].to_dataframe().reset_index()
    return frame[COLUMNS]


def read_back(path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return xr.open_dataset(path).load().to_dataframe().reset_index(drop=True)


def assert_same_values(got: pd.DataFrame, want: pd.DataFrame, *, ordered: bool = True) -> None:
    if ordered:
        assert list(got.columns[: len(COLUMNS)]) == COLUMNS
    assert set(COLUMNS) <= set(got.columns)
    assert len(got) == len(want)
    for name in COLUMNS:
        g, w = got[name].to_numpy(), want[name].to_numpy()
        if w.dtype.kind == "f":
            np.testing.assert_array_equal(g.astype(np.float64), w, err_msg=name)  # inf, nan too
        elif w.dtype.kind in "iu":
            np.testing.assert_array_equal(g.astype(np.int64), w, err_msg=name)
        else:
            assert [str(v) for v in g] == [str(v) for v in w], name


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".nc"])
def test_export_writes_every_value_of_the_store(suffix, results_store, tmp_path, capsys):
    out = tmp_path / f"table{suffix}"
    assert main(["export", str(results_store), "-o", str(out), "-q"]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    want = expected_table(results_store)
    got = read_back(out)
    assert_same_values(got, want, ordered=suffix != ".nc")  # NetCDF3 puts strings first
    # one row per image x variant x scale, and the identical images' +inf kept as +inf
    ds = xr.open_zarr(results_store)
    assert len(got) == ds.sizes["image"] * ds.sizes["variant"] * ds.sizes["scale"]
    inf = got[(got["variant"] == "true") & (got["scale"] == 1)]["psnr"]
    assert len(inf) == ds.sizes["image"] and np.isposinf(inf.astype(float)).all()
    if suffix == ".nc":
        nc = xr.open_dataset(out)
        np.testing.assert_array_equal(nc["psnr"].values, want["psnr"].to_numpy())
        assert nc["psnr"].attrs == ds["psnr"].attrs
        assert nc.attrs["psnr_definition"] == ds.attrs["psnr_definition"]
    if suffix == ".csv":
        text = out.read_text()
        assert ",inf," in text and not text.endswith("\n\n")


def test_export_keeps_every_per_image_metric(results_store):
    ds = open_results(str(results_store)).load()
    ds["ssim"] = 1 / (1 + ds["mse"])
    ds["brightness"] = ("image", np.arange(ds.sizes["image"], dtype=np.float64) / 7)
    frame = export.table_frame(ds, progress=False)
    assert list(frame.columns) == [*COLUMNS, "ssim", "brightness"]
    want = ds[["psnr", "mse", "ssim", "brightness"]].to_dataframe().reset_index()
    for name in ("psnr", "mse", "ssim", "brightness"):
        np.testing.assert_array_equal(frame[name].to_numpy(), want[name].to_numpy())


def test_export_refuses_other_extensions(results_store, tmp_path, capsys):
    out = tmp_path / "table.xlsx"
    assert main(["export", str(results_store), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pupsnr: error: ")
    assert ".parquet, .csv, .nc" in err and "table.xlsx" in err
    assert not out.exists()


def test_export_overwrites_only_when_asked(results_store, tmp_path, capsys):
    out = tmp_path / "table.csv"
    out.write_text("mine\n")
    assert main(["export", str(results_store), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_text() == "mine\n"
    assert main(["export", str(results_store), "-o", str(out), "--overwrite", "-q"]) == 0
    assert_same_values(pd.read_csv(out), expected_table(results_store))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no temporary left
    (tmp_path / "folder.csv").mkdir()
    assert main(["export", str(results_store), "-o", str(tmp_path / "folder.csv"),
                 "--overwrite"]) == 2  # fmt: skip
    assert "is a folder" in capsys.readouterr().err


def test_export_never_writes_into_the_results_store(results_store, tmp_path, capsys):
    store = tmp_path / "psnr.zarr"
    shutil.copytree(results_store, store)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for out in (store / "table.csv", store / "psnr" / "t.nc"):
        assert main(["export", str(store), "-o", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "inside RESULTS" in err and err.count("\n") == 1
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_export_parquet_without_pyarrow_says_how_to_install(
    results_store, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    out = tmp_path / "table.parquet"
    assert main(["export", str(results_store), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'pupsnr-dask[parquet]'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_help_says_how_inf_is_written(capsys):
    assert main(["export", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "+inf in Parquet and NetCDF" in out and "written inf in CSV" in out
