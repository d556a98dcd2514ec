"""The one table renderer: a pandas DataFrame as text, markdown, CSV, JSON or HTML.

Text, markdown and HTML show the DataFrame's cells as they are (strings formatted by the
caller, e.g. with :func:`format_value`); CSV and JSON write numbers unrounded (CSV keeps
``inf``/``nan``, JSON writes non-finite numbers as ``null``)::

    text             markdown                 html
      scale  true    | scale | true |         <table><thead><tr><th>scale</th>...
          1     —    |---:|---:|              <tbody><tr><td class="num">1</td>...
          2  24.61   | 1 | — |

Columns named in ``left`` are left-aligned (the others, numbers, right-aligned).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import jinja2
import pandas as pd

from pupsnr_dask.defaults import FORMATS

TableFormat = Literal["text", "markdown", "csv", "json", "html"]
TABLE_FORMATS: tuple[TableFormat, ...] = (*FORMATS, "html")


def check_format(fmt: str, formats: Sequence[str] = FORMATS) -> None:
    """Raise ValueError unless ``fmt`` is one of ``formats``."""
    if fmt not in formats:
        raise ValueError(f"format must be one of {tuple(formats)}, got {fmt!r}")


def format_value(value: float, all_infinite: bool = False, *, digits: int = 2) -> str:
    """A PSNR for a table: ``digits`` decimals, "—" when every image is identical, "∞" otherwise.

    Examples
    --------
    >>> format_value(24.6149), format_value(math.inf, True), format_value(math.inf)
    ('24.61', '—', '∞')
    >>> format_value(0.71234, digits=4)
    '0.7123'
    """
    if math.isinf(value) and value > 0:
        return "—" if all_infinite else "∞"
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def render(
    df: pd.DataFrame,
    fmt: TableFormat,
    *,
    left: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
) -> str:
    """``df`` in one of :data:`TABLE_FORMATS`.

    Parameters
    ----------
    df : pd.DataFrame
        The table, one row a line; column names are the header.
    fmt : {"text", "markdown", "csv", "json", "html"}
        The format.
    left : sequence of str
        Columns aligned left in text, markdown and HTML.
    meta : dict, optional
        JSON only: keys written next to ``"rows"``.

    Examples
    --------
    >>> df = pd.DataFrame({"scale": ["1", "16"], "what": ["a", "bcd"]})
    >>> print(render(df, "text", left=["what"]))
    scale  what
        1  a
       16  bcd
    >>> print(render(df, "markdown", left=["what"]))
    | scale | what |
    |---:|:---|
    | 1 | a |
    | 16 | bcd |
    """
    check_format(fmt, TABLE_FORMATS)
    if fmt == "csv":
        return to_csv(df)
    if fmt == "json":
        return to_json(df, meta)
    return {"text": to_text, "markdown": to_markdown, "html": to_html}[fmt](df, left)


def _cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return [str(c) for c in df.columns], [[str(c) for c in row] for row in df.to_numpy()]


def to_text(df: pd.DataFrame, left: Sequence[str] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing space."""
    header, rows = _cells(df)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if name in left else c.rjust(w)
            for c, w, name in zip(row, widths, header, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_markdown(df: pd.DataFrame, left: Sequence[str] = ()) -> str:
    """A GitHub-flavoured markdown table."""
    header, rows = _cells(df)
    rule = "|" + "|".join(":---" if name in left else "---:" for name in header) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_csv(df: pd.DataFrame) -> str:
    """CSV with a header row; numbers unrounded, ``inf``/``nan`` as such; no final newline."""
    return df.to_csv(index=False, lineterminator="\n", na_rep="nan").rstrip("\n")


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict a row, Python numbers, non-finite numbers as None."""
    return [
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        for row in df.to_dict(orient="records")
    ]


def to_json(df: pd.DataFrame, meta: dict[str, Any] | None = None) -> str:
    """``{**meta, "rows": [...]}`` as indented JSON (NumPy scalars as Python ones)."""
    doc = {**(meta or {}), "rows": json_records(df)}
    return json.dumps(doc, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def to_html(df: pd.DataFrame, left: Sequence[str] = ()) -> str:
    """An HTML table; every cell escaped."""
    header, rows = _cells(df)
    aligned = [name not in left for name in header]
    return template("table.html.j2").render(header=header, rows=rows, numeric=aligned).rstrip()


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pupsnr_dask.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template(name: str) -> jinja2.Template:
    """A template of ``pupsnr_dask/report/templates``, HTML-escaping every value."""
    return _environment().get_template(name)
