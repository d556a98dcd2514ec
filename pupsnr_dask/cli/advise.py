"""``pupsnr advise``: a model's output quality against p_i, depth by depth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pupsnr_dask.cli.options import (
    absolute,
    absolute_or_none,
    cluster_context,
    cluster_options,
    storage_option,
)
from pupsnr_dask.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONFIDENCE,
    DEFAULT_MARGIN_DB,
    DEFAULT_VARIANTS,
    FORMATS,
    SPLITS,
    Format,
    Split,
)
from pupsnr_dask.helptext import Command

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("advise", cls=Command)
@click.argument("results")
@click.option(
    "--predictions",
    default=None,
    metavar="PRED",
    help="The model's outputs: a folder of images paired with the dataset by relative path "
    "(a/b.jpg <- a/b.png also pairs), or a store laid out as an images store.",
)
@click.option(
    "--output-psnr",
    type=float,
    default=None,
    metavar="DB",
    help="Instead of --predictions: the model's mean output PSNR, e.g. from a training log.",
)
@click.option(
    "--variant",
    type=click.Choice(tuple(DEFAULT_VARIANTS)),
    required=True,
    help="The input the model sees (gray: colourisation, mosaic: mosaic removal).",
)
@click.option(
    "--images",
    default=None,
    metavar="STORE",
    help="Images store holding img_true [default: the one recorded in RESULTS].",
)
@click.option(
    "--split",
    type=click.Choice([*SPLITS, "all"]),
    default="all",
    show_default=True,
    help="Which images to compare on.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Also draw the output PSNR against the p_i curve.",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULT_CONFIDENCE,
    show_default=True,
    help="Level of the t-intervals.",
)
@click.option(
    "--margin",
    "margin_db",
    type=click.FloatRange(min=0),
    default=DEFAULT_MARGIN_DB,
    show_default=True,
    help="dB by which the output must beat p_i to count.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Predictions per task.",
)
@storage_option
@cluster_options
def advise_cmd(
    results: str,
    predictions: str | None,
    output_psnr: float | None,
    variant: str,
    images: str | None,
    split: Split,
    fmt: Format,
    plot_path: str | None,
    confidence: float,
    margin_db: float,
    batch_size: int,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Which U-Net depths does a model really use? Output PSNR against p_i."""
    from pupsnr_dask.advise import advise_depths, plan_advice, run_advice
    from pupsnr_dask.report import plots
    from pupsnr_dask.report.advice import format_advice
    from pupsnr_dask.report.advice_plot import plot_advice
    from pupsnr_dask.store.integrity import damage_named

    if (predictions is None) == (output_psnr is None):
        raise click.UsageError("give exactly one of --predictions and --output-psnr")
    results, images = absolute(results), absolute_or_none(images)
    predictions = absolute_or_none(predictions)
    if plot_path:
        plots.require_matplotlib()
    where: dict[str, Any] = {"variant": variant, "split": split, "storage_options": storage_options}
    # a damaged chunk of the images (or prediction) store, named
    with damage_named(images, results, predictions, storage_options=storage_options):
        if output_psnr is not None:
            ds = advise_depths(results, output_psnr=output_psnr, margin_db=margin_db, **where)
        else:  # check and pair everything before starting a cluster
            assert predictions is not None  # the UsageError above
            plan = plan_advice(results, predictions, images=images, **where)
            with cluster_context(scheduler, n_workers, quiet):
                ds = run_advice(
                    plan,
                    confidence=confidence,
                    margin_db=margin_db,
                    batch_size=batch_size,
                    progress=False if quiet else None,
                )
    if fmt == "csv" and "matching_report" in ds.attrs:
        click.echo("\n".join(ds.attrs["matching_report"]), err=True)
    click.echo(format_advice(ds, fmt))
    if plot_path:
        written = plots.save_figure(plot_advice(ds), plot_path)
        click.echo(f"plot written to {written}", err=True)
