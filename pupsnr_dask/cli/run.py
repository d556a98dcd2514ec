"""``pupsnr run``: the PSNR cube of an images store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pupsnr_dask.cli.options import (
    absolute,
    cluster_context,
    cluster_options,
    csv_list,
    storage_option,
)
from pupsnr_dask.defaults import DEFAULT_SCALES, DEFAULT_VARIANTS, METHODS, Method
from pupsnr_dask.helptext import Command

#: The task families of ``--variants`` and the metrics of ``--metrics``, for the help text
#: (the same as :mod:`pupsnr_dask.registry`'s; tests/test_cli_variants.py checks it).
TASK_FAMILIES = ("sr<k>", "jpeg<q>", "noise<sigma>", "blur<radius>")
METRIC_NAMES = ("psnr", "psnr_y", "ssim")

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("run", cls=Command)
@click.argument("store")
@click.option(
    "-o",
    "--output",
    "results",
    required=True,
    metavar="RESULTS",
    help="Zarr store for the PSNR cube.",
)
@click.option(
    "--variants",
    default=",".join(DEFAULT_VARIANTS),
    show_default=True,
    callback=csv_list(str),
    help=f"Comma-separated inputs: {', '.join(DEFAULT_VARIANTS)}, {', '.join(TASK_FAMILIES)} "
    "(e.g. sr4, jpeg20, noise25, blur2), an installed entry point, or module:function. "
    "`pupsnr variants` lists them with their definitions.",
)
@click.option(
    "--variant-plugin",
    "plugins",
    multiple=True,
    metavar="MODULE:FUNCTION",
    help="Your own input, appended to --variants (repeatable): a function f(images) -> "
    "images on uint8 arrays of shape n x h x w x 3. The Dask workers must be able to import "
    "MODULE.",
)
@click.option(
    "--metrics",
    default="psnr",
    show_default=True,
    callback=csv_list(str),
    help=f"Comma-separated, of {', '.join(METRIC_NAMES)}; psnr (and mse) are always computed.",
)
@click.option(
    "--scales",
    default=",".join(map(str, DEFAULT_SCALES)),
    show_default=True,
    callback=csv_list(int),
    help="Comma-separated PU scales, each dividing the size.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="moments",
    show_default=True,
    help="'literal' upsamples and subtracts (the reference).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Discard RESULTS and any interrupted run into it, and compute again. Without it, an "
    "interrupted run is resumed and complete RESULTS are left as they are.",
)
@storage_option
@cluster_options("run")
def run_cmd(
    store: str,
    results: str,
    variants: tuple[str, ...],
    plugins: tuple[str, ...],
    metrics: tuple[str, ...],
    scales: tuple[int, ...],
    method: Method,
    overwrite: bool,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Compute PSNR by image x variant x scale for an ingested STORE."""
    from pupsnr_dask import schema
    from pupsnr_dask.store.zarr_io import open_store

    store, results = absolute(store), absolute(results)
    # STORE's errors answer before xarray is imported (its kind is read from its metadata).
    open_store(store, "images", storage_options=storage_options, lazy=False)
    from pupsnr_dask import experiment

    variants = (*variants, *plugins)
    # run_experiment checks the selection and runs each plug-in once on the first chunk
    # before the (lazy) cluster starts: a broken plug-in fails first, without one.
    with cluster_context(scheduler, n_workers, quiet):
        ds = experiment.run_experiment(
            store,
            results,
            variants=variants,
            scales=scales,
            method=method,
            metrics=metrics,
            overwrite=overwrite,
            storage_options=storage_options,
            progress=False if quiet else None,
            notify=click.echo,
            lazy=False,  # only its sizes and metrics are printed
        )
    what = ", ".join(experiment.metrics_of(ds)).upper().replace("_Y", "_y")
    click.echo(
        f"{what} of {ds.sizes[schema.IMAGE]} images x {ds.sizes[schema.VARIANT]} variants "
        f"x {ds.sizes[schema.SCALE]} scales in {results}"
    )
