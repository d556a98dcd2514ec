"""``pupsnr variants``: every input and metric that ``pupsnr run`` accepts, with its definition.

Imports only the registry (NumPy and Pillow, no Dask, xarray, pandas or SciPy), so that it
answers at once.
"""

from __future__ import annotations

import json

import click

from pupsnr_dask.helptext import Command


@click.command("variants", cls=Command)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def variants_cmd(fmt: str) -> None:
    """List every input and metric of `pupsnr run`, with its definition.

    Inputs (--variants): the built-in ones, the parameterised families with their grammar (the
    parameter is part of the name: sr4, jpeg20, noise25, blur2), and the entry points of the
    installed packages (group pupsnr_dask.variants). Any importable function f(images) ->
    images on (n, h, w, 3) uint8 arrays also works, with --variant-plugin MODULE:FUNCTION.
    Metrics (--metrics): psnr, psnr_y, ssim, with how their dataset figure is formed.
    """
    from pupsnr_dask.registry import ENTRY_POINT_GROUP, METRICS, available_variants

    inputs = available_variants()
    if fmt == "json":
        doc = {
            "variants": [v._asdict() for v in inputs],
            "metrics": [
                {
                    "name": m.name,
                    "units": m.units,
                    "higher_is_better": m.higher_is_better,
                    "definition": m.definition,
                    "aggregate": m.aggregate,
                }
                for m in METRICS.values()
            ],
            "entry_point_group": ENTRY_POINT_GROUP,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    out = click.HelpFormatter(width=100, max_width=100)
    with out.section("Inputs (--variants)"):
        out.write_dl([(v.name, v.definition) for v in inputs])
    out.write_paragraph()
    out.write_text(
        "Any importable function also works: --variant-plugin MODULE:FUNCTION (the Dask "
        "workers must be able to import MODULE). Installed packages add named inputs in the "
        f"entry-point group {ENTRY_POINT_GROUP}."
    )
    with out.section("Metrics (--metrics)"):
        out.write_dl(
            [
                (m.name, f"[{m.units}] {m.definition}. Dataset figure: {m.aggregate}.")
                for m in METRICS.values()
            ]
        )
    click.echo(out.getvalue().rstrip())
