"""``pupsnr report``: the table of a results store, its plot and its HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pupsnr_dask.cli.options import absolute, absolute_or_none, storage_option
from pupsnr_dask.defaults import DEFAULT_METRIC, DEFAULT_TOP, FORMATS, SPLITS, Format, Split
from pupsnr_dask.helptext import Command

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("report", cls=Command)
@click.argument("results")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--split",
    type=click.Choice([*SPLITS, "all"]),
    default="all",
    show_default=True,
    help="Which images to summarise.",
)
@click.option(
    "--metric",
    default=DEFAULT_METRIC,
    show_default=True,
    metavar="NAME",
    help="Which metric the table, --plot and --html show (the page ranks its extremes by it): "
    "psnr, or psnr_y / ssim when RESULTS hold them (`pupsnr run --metrics`). PSNR adds the "
    "PSNR of the mean MSE; the others show the mean and standard deviation of the per-image "
    "values. All are higher-is-better.",
)
@click.option(
    "--plot",
    "plot_file",
    default=None,
    metavar="FILE.png",
    help="Also draw PSNR against scale, with its spread, to FILE.png (needs matplotlib). A file "
    "already there is replaced only if pupsnr wrote it.",
)
@click.option(
    "--html",
    "html_file",
    default=None,
    metavar="FILE.html",
    help="Also write one self-contained HTML page: tables, plots, best and worst images with "
    "their PU grids, provenance. A file already there is replaced only if pupsnr wrote it.",
)
@click.option(
    "--images",
    default=None,
    metavar="STORE",
    help="Images store for the thumbnails and grids of --html [default: the one recorded in "
    "RESULTS].",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=DEFAULT_TOP,
    show_default=True,
    help="Images with the lowest and the highest PSNR shown per variant and scale in --html.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@storage_option
def report_cmd(
    results: str,
    fmt: Format,
    split: Split,
    metric: str,
    plot_file: str | None,
    html_file: str | None,
    images: str | None,
    top: int,
    quiet: bool,
    storage_options: StorageOptions | None,
) -> None:
    """Print mean PSNR by variant x scale, with counts and spread.

    The definitions and the source's published table: docs/definitions.md.
    """
    from pupsnr_dask import query
    from pupsnr_dask.report.summary import format_summary
    from pupsnr_dask.store.integrity import damage_named
    from pupsnr_dask.store.zarr_io import open_store

    if images is not None and html_file is None:
        raise click.UsageError("--images is used only with --html")
    results, images = absolute(results), absolute_or_none(images)
    for out in (plot_file, html_file):
        if out is not None and not Path(out).resolve().parent.is_dir():
            raise FileNotFoundError(f"folder of {out!r} does not exist")
    if plot_file is not None:
        from pupsnr_dask.report.plots import figure_path  # matplotlib, only for a plot

        figure_path(plot_file)  # a format matplotlib cannot write, or a user's file: refused
    if html_file is not None:
        from pupsnr_dask.report.html import check_html_output

        check_html_output(html_file)  # a user's file there is never replaced
    # The table alone is read into NumPy and summarised with NumPy: dask.array is not
    # imported (0.35 s of an instant answer, issue 12; see query.Summary).
    lazy = plot_file is not None or html_file is not None
    ds = open_store(results, "psnr", storage_options=storage_options, lazy=lazy)
    with damage_named(results, storage_options=storage_options):
        table = query.summary_figures(ds, split, metric)
    click.echo(format_summary(table, fmt))
    progress = False if quiet else None
    if plot_file is not None:
        from pupsnr_dask.report import plots  # matplotlib, only for a plot

        figure = plots.plot_psnr(ds, split, progress=progress, metric=metric)
        written = plots.save_figure(figure, plot_file)
        click.echo(f"pupsnr: plot written to {written}", err=True)
    if html_file is not None:
        from pupsnr_dask.report import html  # the PU grids need the experiment's kernels

        with damage_named(images, results, storage_options=storage_options):
            _, note = html.write_html(
                results,
                html_file,
                images=images,
                split=split,
                top=top,
                storage_options=storage_options,
                progress=progress,
                metric=metric,
            )
        click.echo(f"pupsnr: HTML report written to {html_file} ({note})", err=True)
