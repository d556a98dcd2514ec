"""``pupsnr verify``: the deep checks of a store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pupsnr_dask.cli.options import (
    absolute,
    absolute_or_none,
    cluster_context,
    cluster_options,
    storage_option,
)
from pupsnr_dask.defaults import DEFAULT_RECOMPUTE
from pupsnr_dask.helptext import Command

if TYPE_CHECKING:
    from pupsnr_dask.store.fs import StorageOptions


@click.command("verify", cls=Command)
@click.argument("store")
@click.option(
    "--images",
    default=None,
    metavar="STORE",
    help="For a results store: its images store [default: the one recorded in it].",
)
@click.option(
    "--recompute",
    default=str(DEFAULT_RECOMPUTE),
    show_default=True,
    metavar="N|all",
    help="For a results store: result chunks (each of one or more image chunks) recomputed "
    "from the images and compared exactly.",
)
@storage_option
@cluster_options("verify")
def verify_cmd(
    store: str,
    images: str | None,
    recompute: str,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> int:
    """Check STORE thoroughly; exit status 1 and a list of defects if unsound.

    Checks the layout, dtypes and shapes, that every chunk is present and readable, and that a
    results store matches its images (labels, and a sample of chunks recomputed exactly).
    """
    from pupsnr_dask import verify
    from pupsnr_dask.store.fs import store_exists
    from pupsnr_dask.store.integrity import unfinished

    if recompute != "all" and not recompute.isdigit():
        raise click.BadParameter(
            f"must be a number or 'all', got {recompute!r}", param_hint="--recompute"
        )
    store, images = absolute(store), absolute_or_none(images)
    if not store_exists(store, storage_options) and not unfinished(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    with cluster_context(scheduler, n_workers, quiet):
        found = verify.verify_store(
            store,
            images=images,
            recompute=None if recompute == "all" else int(recompute),
            storage_options=storage_options,
            progress=False if quiet else None,
        )
    click.echo("\n".join(found.lines()))
    return 0 if found.ok else 1
