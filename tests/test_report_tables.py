"""The one table renderer, and the summary and advice tables built on it."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from advice_cases import load_img_true, rounded_pu, run_advise, write_predictions

from pupsnr_dask import query
from pupsnr_dask.cli import main
from pupsnr_dask.report import tables
from pupsnr_dask.report.advice import format_advice
from pupsnr_dask.report.summary import STATISTICS, format_summary, statistic_frame
from pupsnr_dask.store.zarr_io import open_store

FRAME = pd.DataFrame(
    {"scale": [1, 16], "mean": [24.614912345678903, float("inf")], "note": ["a<b & c", "∞"]}
)


def test_text_pads_columns_and_aligns_left_only_where_asked():
    text = tables.render(FRAME.astype(str), "text", left=["note"])
    assert text.splitlines() == [
        "scale                mean  note",
        "    1  24.614912345678903  a<b & c",
        "   16                 inf  ∞",
    ]


def test_markdown_is_a_pipe_table_with_alignment():
    md = tables.render(FRAME.astype(str), "markdown", left=["note"])
    assert md.splitlines()[:2] == ["| scale | mean | note |", "|---:|---:|:---|"]
    assert md.splitlines()[3] == "| 16 | inf | ∞ |"


def test_csv_keeps_numbers_unrounded_and_ends_without_a_blank_line():
    text = tables.render(FRAME, "csv")
    assert not text.endswith("\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert float(rows[0]["mean"]) == 24.614912345678903 and rows[1]["mean"] == "inf"
    assert rows[0]["note"] == "a<b & c"


def test_json_parses_with_non_finite_numbers_as_null():
    doc = json.loads(tables.render(FRAME, "json", meta={"split": "all"}))
    assert doc["split"] == "all"
    assert doc["rows"][0] == {"scale": 1, "mean": 24.614912345678903, "note": "a<b & c"}
    assert doc["rows"][1]["mean"] is None


def test_html_escapes_every_cell_and_heading():
    df = pd.DataFrame({"<th>": ["<script>alert(1)</script>"], "n": ["1"]})
    out = tables.render(df, "html", left=["<th>"])
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "<th>&lt;th&gt;</th>" in out and '<td class="num">1</td>' in out
    assert "<td>&lt;script" in out  # left-aligned: no "num" class


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match=r"format must be one of \('text', 'markdown'"):
        tables.render(FRAME, "xml")


# --- the summary table -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary(results_store):
    return query.summarize(open_store(str(results_store), "psnr"))


def test_summary_text_has_spec_layout(summary):
    text = format_summary(summary, "text")
    assert text.splitlines()[0] == f"{int(summary['n_images'])} images, split: all"
    for title in STATISTICS.values():
        assert f"\n\n{title}\n\n" in text
    frame = statistic_frame(summary, "mean_psnr_db")
    assert list(frame.columns) == ["scale", "resolution", "true", "gray", "mosaic"]
    assert frame.iloc[0].tolist()[:3] == ["1", "256", "—"]  # true at scale 1: all identical
    assert "## Mean PSNR (dB)" in format_summary(summary, "markdown")


def test_summary_csv_and_json_have_one_row_per_variant_and_scale(summary):
    rows = list(csv.DictReader(io.StringIO(format_summary(summary, "csv"))))
    assert len(rows) == 18 and rows[0]["variant"] == "true" and rows[0]["mean_psnr_db"] == "inf"
    doc = json.loads(format_summary(summary, "json"))
    assert doc["split"] == "all" and len(doc["rows"]) == 18
    assert doc["rows"][0]["mean_psnr_db"] is None


def test_report_csv_on_the_command_line_ends_without_a_blank_line(results_store, capsys):
    assert main(["report", str(results_store), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert len(out.splitlines()) == 19


# --- the advice table --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def advice(images_store, results_store, tmp_path_factory):
    pixels, sources = load_img_true(images_store)
    folder = tmp_path_factory.mktemp("pred")
    write_predictions(folder, sources, rounded_pu(pixels, "gray", 8))
    return run_advise(str(results_store), str(folder), variant="gray")


def test_advice_tables(advice):
    ds = advice
    rows = list(csv.DictReader(io.StringIO(format_advice(ds, "csv"))))
    assert [int(r["scale"]) for r in rows] == [1, 2, 4, 8, 16, 32]
    assert [int(r["depth"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    assert float(rows[4]["diff_ci_low_db"]) == pytest.approx(float(ds["diff_ci_low_db"][4]))
    markdown = format_advice(ds, "markdown")
    assert "| depth | scale | resolution | p_i mean | output mean |" in markdown
    assert "Crossover at depth 4 (16 px)" in markdown
    with pytest.raises(ValueError, match="format must be one of"):
        format_advice(ds, "html")


def test_advice_text_aligns_numbers_right_and_the_verdict_left(advice):
    lines = format_advice(advice, "text").splitlines()
    head = next(k for k, line in enumerate(lines) if line.lstrip().startswith("depth"))
    table = lines[head : head + 7]
    assert table[0].endswith("verdict") and all(line == line.rstrip() for line in table)
    starts = {
        line.index(str(v)) for line, v in zip(table[1:], advice["verdict"].values, strict=True)
    }
    assert len(starts) == 1  # verdicts start in one column
    doc = json.loads(format_advice(advice, "json"))
    assert doc["crossover_depth"] == 4 and doc["skip_depth"] == 3
    assert "advice_method" in doc and "method" not in doc
