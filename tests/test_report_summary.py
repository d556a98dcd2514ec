"""``report/summary.py``: the summary tables' cells, intervals, records and headers.

The layout checks on a real results store (column order, 18 CSV rows, markdown headings, the
command line) are in ``test_report_tables.py``; these check each cell of the module's frames
against NumPy and ``scipy.stats`` on a small hand-made results cube whose values are known,
with identical images (+inf) placed where every formatting rule shows, and the SSIM tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats as stats
import xarray as xr

from pupsnr_dask import query
from pupsnr_dask.report.summary import (
    STATISTICS,
    format_summary,
    interval_frame,
    records_frame,
    statistic_frame,
)

VARIANTS = ["true", "gray", "mosaic"]
SCALES = [1, 2, 4, 8]
SIZE = 64
N = 9


def _psnr(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    """A results cube of 9 images with +inf where the table rules differ.

    ``true`` at scale 1: every image identical (mse 0); ``true`` at scale 2: all but one;
    ``gray`` at scale 4: one image identical. The rest: random MSEs. Images 0-5 are ``train``.
    """
    rng = np.random.default_rng(11)
    mse = rng.uniform(5, 900, (N, len(VARIANTS), len(SCALES)))
    mse[:, 0, 0] = 0.0
    mse[1:, 0, 1] = 0.0
    mse[4, 1, 2] = 0.0
    ssim = rng.uniform(0.2, 0.99, mse.shape)
    dims = ("image", "variant", "scale")
    return xr.Dataset(
        {"psnr": (dims, _psnr(mse)), "mse": (dims, mse), "ssim": (dims, ssim)},
        coords={
            "image": np.arange(N),
            "variant": VARIANTS,
            "scale": SCALES,
            "resolution": ("scale", [SIZE // s for s in SCALES]),
            "source": ("image", [f"{i}.png" for i in range(N)]),
            "split": ("image", ["train"] * 6 + ["test"] * 3),
        },
        attrs={"pupsnr_kind": "psnr", "size": SIZE},
    )


@pytest.fixture(scope="module")
def table(cube) -> xr.Dataset:
    return query.summary_table(cube, progress=False)


def cell(frame, variant: str, scale: int) -> str:
    row = frame.loc[frame["scale"] == str(scale)]
    assert len(row) == 1
    return str(row[variant].iloc[0])


def expected_text(values: np.ndarray, n_inf: int, n: int, digits: int = 2) -> str:
    """What a cell must show, written out: +inf is '—' when all identical, else '∞'."""
    if np.isposinf(values):
        return "—" if n_inf == n else "∞"
    if np.isnan(values):
        return "n/a"
    return f"{values:.{digits}f}"


def test_statistic_cells_are_mean_std_and_psnr_of_mean_mse_to_two_decimals(cube, table):
    psnr, mse = cube["psnr"].values, cube["mse"].values
    by_stat = {
        "mean_psnr_db": lambda j, k: np.mean(psnr[:, j, k]),
        "std_psnr_db": lambda j, k: np.std(psnr[:, j, k], ddof=1),
        "psnr_of_mean_mse_db": lambda j, k: _psnr(np.array(mse[:, j, k].mean())),
    }
    assert set(by_stat) == set(STATISTICS)
    for stat, compute in by_stat.items():
        frame = statistic_frame(table, stat)
        assert frame["resolution"].tolist() == [str(SIZE // s) for s in SCALES]
        for j, variant in enumerate(VARIANTS):
            for k, scale in enumerate(SCALES):
                with np.errstate(invalid="ignore"):
                    value = float(compute(j, k))
                n_inf = int(np.isinf(psnr[:, j, k]).sum())
                assert cell(frame, variant, scale) == expected_text(value, n_inf, N)


def test_all_identical_is_a_dash_some_identical_an_infinity(table):
    mean = statistic_frame(table, "mean_psnr_db")
    assert cell(mean, "true", 1) == "—"
    assert cell(mean, "true", 2) == "∞" and cell(mean, "gray", 4) == "∞"
    assert cell(statistic_frame(table, "psnr_of_mean_mse_db"), "true", 1) == "—"
    assert cell(statistic_frame(table, "psnr_of_mean_mse_db"), "gray", 4) != "∞"


def test_interval_cells_are_the_student_t_interval_of_the_finite_values(cube, table):
    frame = interval_frame(table)
    psnr = cube["psnr"].values
    shown = 0
    for j, variant in enumerate(VARIANTS):
        for k, scale in enumerate(SCALES):
            finite = psnr[:, j, k][np.isfinite(psnr[:, j, k])]
            if len(finite) < 2:
                continue
            mean = finite.mean()
            low, high = stats.t.interval(0.95, len(finite) - 1, loc=mean, scale=stats.sem(finite))
            assert cell(frame, variant, scale) == f"{mean:.2f} [{low:.2f}, {high:.2f}]"
            shown += 1
    assert shown == len(VARIANTS) * len(SCALES) - 2


def test_interval_cell_without_finite_values_is_a_dash_and_with_one_is_the_mean(cube, table):
    frame = interval_frame(table)
    assert cell(frame, "true", 1) == "—"
    only = float(cube["psnr"].values[0, 0, 1])  # the one image not identical there
    assert cell(frame, "true", 2) == f"{only:.2f}"


def test_records_hold_every_variant_and_scale_unrounded(cube, table):
    records = records_frame(table)
    assert list(zip(records["variant"], records["scale"], strict=True)) == [
        (v, s) for v in VARIANTS for s in SCALES
    ]
    psnr, mse = cube["psnr"].values, cube["mse"].values
    for row in records.itertuples():
        j, k = VARIANTS.index(row.variant), SCALES.index(row.scale)
        assert row.metric == "psnr" and row.n_images == N
        assert row.resolution == SIZE // row.scale
        assert row.n_infinite == int(np.isinf(psnr[:, j, k]).sum())
        with np.errstate(invalid="ignore"):
            assert row.mean_psnr_db == pytest.approx(psnr[:, j, k].mean(), nan_ok=True)
            std = np.std(psnr[:, j, k], ddof=1)
        assert row.std_psnr_db == pytest.approx(std, nan_ok=True)
        assert row.psnr_of_mean_mse_db == pytest.approx(float(_psnr(mse[:, j, k].mean())))


def test_csv_and_json_carry_the_split_metric_and_aggregate(cube):
    summary = query.summarize(cube, "test")
    doc = json.loads(format_summary(summary, "json"))
    assert doc["n_images"] == 3 and doc["split"] == "test" and doc["metric"] == "psnr"
    assert doc["aggregate"].startswith("mean of the per-image PSNRs")
    gray4 = next(r for r in doc["rows"] if r["variant"] == "gray" and r["scale"] == 4)
    assert gray4["mean_psnr_db"] == pytest.approx(cube["psnr"].values[6:, 1, 2].mean())
    rows = list(csv.DictReader(io.StringIO(format_summary(summary, "csv"))))
    assert float(rows[1]["mean_psnr_db"]) == math.inf  # true at scale 2: images 6-8 identical
    assert float(rows[5]["psnr_of_mean_mse_db"]) == pytest.approx(
        float(_psnr(cube["mse"].values[6:, 1, 1].mean())), rel=1e-15
    )


def test_text_names_the_split_and_for_psnr_no_metric_line(cube):
    text = format_summary(query.summarize(cube, "train"), "text")
    lines = text.splitlines()
    assert lines[0] == "6 images, split: train"
    assert not any(line.startswith("metric:") for line in lines)
    assert [line for line in lines if line in STATISTICS.values()] == list(STATISTICS.values())


def test_ssim_tables_have_four_decimals_and_say_which_metric(cube):
    summary = query.summary_table(cube, "train", progress=False, metric="ssim")
    ssim = cube["ssim"].values[:6]
    mean = statistic_frame(summary, "mean_ssim")
    assert cell(mean, "mosaic", 8) == f"{ssim[:, 2, 3].mean():.4f}"
    std = statistic_frame(summary, "std_ssim")
    assert cell(std, "gray", 2) == f"{np.std(ssim[:, 1, 1], ddof=1):.4f}"
    values = ssim[:, 1, 3]
    low, high = stats.t.interval(0.95, 5, loc=values.mean(), scale=stats.sem(values))
    assert (
        cell(interval_frame(summary), "gray", 8) == f"{values.mean():.4f} [{low:.4f}, {high:.4f}]"
    )
    text = format_summary(summary, "text")
    assert text.splitlines()[1].startswith(
        "metric: ssim (1, higher is better); dataset figure: mean"
    )
    assert "Mean SSIM" in text and "Mean PSNR (dB)" not in text
    records = records_frame(summary)
    assert set(records["metric"]) == {"ssim"}
    assert "mean_ssim" in records and "psnr_of_mean_mse_db" not in records


def test_an_unknown_format_is_refused(table):
    with pytest.raises(ValueError, match="format must be one of"):
        format_summary(table, "html")


def _xarray_reference(cube: xr.Dataset, split: str, metric: str) -> dict[str, np.ndarray]:
    """The statistics by xarray's own reductions (NaN skipped, as xarray does for floats)."""
    sel = cube if split == "all" else cube.isel(image=np.flatnonzero(cube["split"] == split))
    mean, std = list(query.statistic_names(metric))[:2]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # std of +inf, an all-NaN column
        return _reductions(sel, metric, mean, std)


def _reductions(sel: xr.Dataset, metric: str, mean: str, std: str) -> dict[str, np.ndarray]:
    values = sel[metric]
    out = {
        mean: values.mean("image").values,
        std: values.std("image", ddof=1).values,
        "n_infinite": np.isinf(values).sum("image").values,
    }
    if metric == "psnr":
        out["psnr_of_mean_mse_db"] = _psnr(sel["mse"].mean("image").values)
    return out


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
@pytest.mark.parametrize("split", ["all", "train", "test"])
@pytest.mark.parametrize("with_nan", [False, True])
def test_summary_figures_are_xarrays_reductions_bit_for_bit(cube, metric, split, with_nan):
    """The NumPy statistics of ``pupsnr report`` (``summary_figures``) are those of xarray's
    reductions, bit for bit, NaN values left out as xarray leaves them; ``summarize`` is the
    same figures as a dataset, and both format to the same text, csv and json."""
    if with_nan:
        cube = cube.copy(deep=True)
        cube[metric].values[2, 1, 1] = np.nan  # one image's value missing
        cube[metric].values[:, 2, 3] = np.nan  # a whole column missing: NaN, not a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning reaches the user
        figures = query.summary_figures(cube, split, metric)
    want = _xarray_reference(cube, split, metric)
    assert set(figures.values) == set(want)
    for name, values in want.items():
        np.testing.assert_array_equal(figures.values[name], values, err_msg=name)
        assert figures.values[name].dtype == values.dtype, name
    n = len(cube["image"]) if split == "all" else int((cube["split"] == split).sum())
    assert figures.n_images == n
    assert (figures.variants, figures.scales) == (VARIANTS, SCALES)
    assert figures.resolutions == [SIZE // s for s in SCALES]
    ds = query.summarize(cube, split, metric)
    for name, values in want.items():
        np.testing.assert_array_equal(ds[name].transpose("variant", "scale").values, values)
        assert ds[name].attrs["long_name"], name
    assert int(ds["n_images"]) == n and ds.attrs == figures.attrs
    assert ds.attrs["metric"] == metric and ds.attrs["split"] == split
    for fmt in ("text", "csv", "json", "markdown"):
        assert format_summary(figures, fmt) == format_summary(ds, fmt), fmt


def test_the_dataset_of_summarize_names_each_statistic_and_its_units(cube):
    ds = query.summarize(cube)
    assert ds["mean_psnr_db"].attrs == {"units": "dB", "long_name": "Mean PSNR (dB)"}
    assert ds["psnr_of_mean_mse_db"].attrs["units"] == "dB"
    assert "units" not in ds["n_infinite"].attrs  # a count
    assert set(ds.coords) == {"variant", "scale", "resolution"}
    assert query.summarize(cube, metric="ssim")["mean_ssim"].attrs["units"] == "1"  # CF: none


def test_one_image_has_no_standard_deviation(cube):
    one = cube.isel(image=[0])
    figures = query.summary_figures(one)
    assert np.isnan(figures.values["std_psnr_db"]).all()
    np.testing.assert_array_equal(figures.values["mean_psnr_db"], one["psnr"].values[0])
