"""The storage contract for other tools: CF-style attributes, JSON attributes, netCDF, README."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from pupsnr_dask import schema
from pupsnr_dask.store.zarr_io import open_store
from pupsnr_dask.verify import verify_store

README = Path(__file__).parent.parent / "README.md"


def _zarr_attrs(store: Path) -> dict:
    """The group attributes as Zarr stores them (not through xarray)."""
    return dict(zarr.open_group(str(store), mode="r").attrs)


@pytest.mark.parametrize("kind", ["images", "psnr"])
def test_every_variable_and_coordinate_has_cf_attributes(kind, images_store, results_store):
    store = images_store if kind == "images" else results_store
    ds = xr.open_zarr(store)
    expected = {
        "images": {"images", "image", "source", "color_score", "split", "original_width",
                   "original_height"},
        "psnr": {"psnr", "mse", "image", "variant", "scale", "resolution", "source", "split"},
    }[kind]  # fmt: skip
    assert set(ds.variables) == expected
    for name, var in ds.variables.items():
        assert var.attrs.get("long_name"), name
        table = schema.VARIABLE_ATTRS[name]
        assert {k: var.attrs.get(k) for k in table} == table, name
        assert ("units" in var.attrs) == (name == "psnr"), name
    if kind == "psnr":
        assert ds.psnr.attrs["units"] == "dB"
        assert "0-255" in ds.mse.attrs["description"]


def test_nested_attributes_are_json_text(images_store, results_store):
    rejected = _zarr_attrs(images_store)[schema.REJECTED_ATTR]
    assert isinstance(rejected, str)
    assert {"skimage/camera.png", "skimage/moon.png"} <= {r["source"] for r in json.loads(rejected)}
    ingest = json.loads(_zarr_attrs(results_store)["images_store_attrs"])
    assert ingest["size"] == 256 and ingest[schema.KIND_ATTR] == "images"
    for store in (images_store, results_store):  # nothing else nested
        values = _zarr_attrs(store).values()
        assert all(isinstance(v, str | int | float) for v in values)


@pytest.mark.parametrize("kind", ["images", "psnr"])
def test_stores_round_trip_through_netcdf(kind, images_store, results_store, tmp_path):
    """``xr.open_zarr(store).load().to_netcdf(path)`` works; every value and attribute is back."""
    store = images_store if kind == "images" else results_store
    ds = xr.open_zarr(store).load()
    path = tmp_path / f"{kind}.nc"
    # netCDF-3 (scipy, the engine installed) has no uint8: the pixels are written as int16.
    ds.to_netcdf(path, encoding={"images": {"dtype": "int16"}} if kind == "images" else None)
    with xr.open_dataset(path) as back:
        back.load()
    assert back.attrs == ds.attrs
    for name in schema.JSON_ATTRS:
        if name in ds.attrs:
            assert schema.json_attr(back.attrs, name) == json.loads(_zarr_attrs(store)[name])
    assert set(back.variables) == set(ds.variables)
    for name, var in ds.variables.items():
        np.testing.assert_array_equal(back[name].values, var.values, err_msg=name)
        assert back[name].attrs == var.attrs, name


def _old_form(store: Path, target: Path, **attrs) -> Path:
    """A copy of ``store`` with ``attrs`` written as lists / mappings, as before JSON text."""
    shutil.copytree(store, target)
    group = zarr.open_group(str(target), mode="r+", use_consolidated=False)
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(target))
    return target


def test_stores_with_list_and_mapping_attributes_still_open(images_store, results_store, tmp_path):
    rejected = json.loads(_zarr_attrs(images_store)[schema.REJECTED_ATTR])
    images = _old_form(images_store, tmp_path / "d.zarr", rejected=rejected)
    assert isinstance(_zarr_attrs(images)[schema.REJECTED_ATTR], list)  # really the old form
    ds = open_store(str(images), "images")
    assert schema.json_attr(ds.attrs, schema.REJECTED_ATTR) == rejected
    assert verify_store(str(images), progress=False).ok
    ingest = json.loads(_zarr_attrs(results_store)["images_store_attrs"])
    results = _old_form(results_store, tmp_path / "r.zarr", images_store_attrs=ingest)
    ds = open_store(str(results), "psnr")
    assert schema.json_attr(ds.attrs, "images_store_attrs") == ingest


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ('[{"source": "a.png", "reason": "grey"}]', True),
        ([{"source": "a.png", "reason": "grey"}], True),
        ("[]", True),
        ("not json", False),
        ('{"source": "a.png"}', False),
        ('[{"source": 1, "reason": "grey"}]', False),
        ("[" * 100_000 + "]" * 100_000, False),  # nesting that would exhaust the stack
    ],
)
def test_rejected_attribute_is_checked_in_both_forms(value, ok):
    ds = xr.Dataset(attrs={schema.REJECTED_ATTR: value})
    defects = schema.label_defects(ds, "images")
    assert (defects == []) == ok, defects
    if not ok:
        assert defects[0].startswith("attribute 'rejected' must be a list of objects")


def test_json_attr_reads_both_forms_and_refuses_other_text():
    entry = {"source": "ü/ß.png", "reason": "grey", "color_score": None}
    encoded = schema.encode_attrs({"rejected": [entry], "size": 256, "note": "[not json"})
    assert encoded["size"] == 256 and encoded["note"] == "[not json"  # strings stay as they are
    assert encoded["rejected"].isascii()  # netCDF-3 attributes are bytes
    assert schema.json_attr(encoded, "rejected") == [entry]
    assert schema.json_attr({"rejected": [entry]}, "rejected") == [entry]
    assert schema.json_attr({}, "rejected", []) == []
    with pytest.raises(schema.StoreError, match="attribute 'note' is not valid JSON"):
        schema.json_attr(encoded, "note")


def _readme_snippet(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- readme-snippet: {name} -->\s*```python\n(.*?)```\s*<!-- /readme-snippet -->",
        text,
        re.S,
    )
    assert found, f"README has no snippet {name!r}"
    return found.group(1)


def test_readme_opens_a_results_store_with_xarray_alone(results_store, images_store, tmp_path):
    """The README's snippet, run as it is in a new interpreter that never imports pupsnr."""
    shutil.copytree(results_store, tmp_path / "psnr.zarr")
    check = """
import sys
assert "pupsnr_dask" not in sys.modules, "the snippet must not need pupsnr"
print(json.dumps({"units": results.psnr.attrs["units"], "mean": mean_db.to_dict(),
                  "ingest": ingest, "rejected": rejected}))
"""
    out = subprocess.run(
        [sys.executable, "-c", _readme_snippet("open-results") + check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout.splitlines()[-1])
    ref = open_store(str(results_store), "psnr")
    assert got["units"] == "dB"
    mean = ref.psnr.mean("image").to_pandas()  # variant x scale
    assert set(got["mean"]) == {str(s) for s in mean.columns}
    for scale, column in got["mean"].items():
        np.testing.assert_allclose(pd.Series(column)[mean.index], mean[int(scale)], rtol=1e-12)
    assert got["ingest"] == schema.json_attr(ref.attrs, "images_store_attrs")
    assert got["rejected"] == json.loads(_zarr_attrs(images_store)[schema.REJECTED_ATTR])
    with xr.open_dataset(tmp_path / "psnr.nc") as nc:
        assert nc.attrs == ref.attrs
