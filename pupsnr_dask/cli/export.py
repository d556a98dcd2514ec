"""``pupsnr export``: the per-image table of a results store, as a file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pupsnr_dask.cli.options import absolute, storage_option
from pupsnr_dask.helptext import Command

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("export", cls=Command)
@click.argument("results")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="The table to write: FILE.parquet (needs pyarrow: pip install 'pupsnr-dask[parquet]'), "
    "FILE.csv or FILE.nc (NetCDF), chosen by the extension.",
)
@click.option("--overwrite", is_flag=True, help="Replace FILE when it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@storage_option
def export_cmd(
    results: str,
    output: str,
    overwrite: bool,
    quiet: bool,
    storage_options: StorageOptions | None,
) -> None:
    """Write RESULTS as a table: one row per image x variant x scale.

    Columns image, source, split, variant, scale, resolution, psnr, mse and every other
    per-image metric of RESULTS, as stored, to join with a training log on source and scale.
    A PSNR of +inf (an image identical to its PU transform) stays +inf in Parquet and NetCDF
    and is written inf in CSV (NaN as nan); pandas reads both back as floats.
    """
    from pupsnr_dask import export, schema
    from pupsnr_dask.store.zarr_io import open_store

    export.export_format(output)  # before opening anything
    results = absolute(results)
    ds = open_store(results, "psnr", storage_options=storage_options)
    written = export.write_table(
        ds,
        output,
        overwrite=overwrite,
        results_location=results,
        storage_options=storage_options,
        progress=False if quiet else None,
    )
    click.echo(f"{ds.sizes[schema.IMAGE]} images x {ds.sizes[schema.VARIANT]} variants x "
               f"{ds.sizes[schema.SCALE]} scales written to {written}")  # fmt: skip
