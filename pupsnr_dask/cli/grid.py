"""``pupsnr grid``: the PU grid of one image, as a picture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pupsnr_dask.cli.options import absolute, csv_list, storage_option
from pupsnr_dask.defaults import DEFAULT_DPI, DEFAULT_SCALES, DEFAULT_VARIANTS
from pupsnr_dask.helptext import Command

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("grid", cls=Command)
@click.argument("store")
@click.option(
    "--image",
    required=True,
    metavar="SOURCE_OR_INDEX",
    help="The image: its index, its source path, or the end of the path (coffee.png).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE.png",
    help="Picture to write (a file already there is replaced only if pupsnr wrote it).",
)
@click.option(
    "--variants",
    default=",".join(DEFAULT_VARIANTS),
    show_default=True,
    callback=csv_list(str),
    help="Rows, comma-separated.",
)
@click.option(
    "--scales",
    default=",".join(map(str, DEFAULT_SCALES)),
    show_default=True,
    callback=csv_list(int),
    help="Columns, comma-separated (scale 1, the original, always comes first).",
)
@click.option(
    "--dpi",
    type=click.IntRange(20, 600),
    default=DEFAULT_DPI,
    show_default=True,
    help="Resolution of the picture (dots per inch).",
)
@storage_option
def grid_cmd(
    store: str,
    image: str,
    output: str,
    variants: tuple[str, ...],
    scales: tuple[int, ...],
    dpi: int,
    storage_options: StorageOptions | None,
) -> None:
    """Draw the PU grid of one image of an ingested STORE.

    Rows true / gray / mosaic, columns the original then each scale, the PSNR of each cell
    against the true image in its title.
    """
    from pupsnr_dask.grid import pu_grid
    from pupsnr_dask.report import plots
    from pupsnr_dask.store.integrity import damage_named
    from pupsnr_dask.store.zarr_io import open_store

    plots.figure_path(output)  # matplotlib, the folder and the format, before any work
    store = absolute(store)
    ds = open_store(store, "images", storage_options=storage_options)
    with damage_named(store, storage_options=storage_options):
        cells = pu_grid(ds, image, variants, scales)
    written = plots.save_figure(plots.grid_figure(cells), output, dpi=dpi)
    where = f"image {cells.attrs['image']} ({cells.attrs['source']})"
    click.echo(f"PU grid of {where} written to {written}")
