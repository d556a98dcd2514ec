"""``pupsnr ingest``: ingest a folder of images into one Zarr store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pupsnr_dask.cli.options import absolute, cluster_context, cluster_options, storage_option
from pupsnr_dask.defaults import DEFAULT_CHUNK_SIZE, DEFAULT_SIZE, DEFAULT_THRESHOLD
from pupsnr_dask.helptext import Command

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("ingest", cls=Command)
@click.argument("src")
@click.option(
    "-o", "--output", "store", required=True, metavar="STORE", help="Zarr store to write."
)
@click.option(
    "--size",
    type=int,
    default=DEFAULT_SIZE,
    show_default=True,
    help="Side of the square output images (a multiple of 32, so that every default scale "
    "divides it).",
)
@click.option(
    "--threshold",
    type=float,
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Colour when the mean RGB correlation is below this.",
)
@click.option(
    "--test-count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Images held out as split 'test' (deterministic).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Images per Zarr chunk and per task.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Discard STORE and any interrupted ingest into it, and start again. Without it, an "
    "interrupted ingest is resumed and a finished STORE gets only the files new in SRC.",
)
@storage_option
@cluster_options("ingest")
def ingest_cmd(
    src: str,
    store: str,
    size: int,
    threshold: float,
    test_count: int,
    chunk_size: int,
    overwrite: bool,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Keep the colour images below SRC, resized, in one Zarr store.

    SRC is a folder, an fsspec URL of one (s3://bucket/photos), or an archive read in place
    without unpacking: .zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz (each image's source is
    then its path inside the archive).
    """
    from pupsnr_dask.ingest import ingest_folder

    src, store = absolute(src), absolute(store)
    with cluster_context(scheduler, n_workers, quiet):
        summary = ingest_folder(
            src,
            store,
            size=size,
            threshold=threshold,
            test_count=test_count,
            chunk_size=chunk_size,
            overwrite=overwrite,
            storage_options=storage_options,
            progress=False if quiet else None,
        )
    click.echo("\n".join(summary.lines()))
