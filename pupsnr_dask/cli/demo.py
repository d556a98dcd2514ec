"""``pupsnr demo``: the whole experiment on bundled sample photos."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click

from pupsnr_dask.cli.options import cluster_context, cluster_options
from pupsnr_dask.helptext import Command


@click.command("demo", cls=Command)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the sample images and stores here [default: a temporary folder].",
)
@cluster_options("demo")
def demo_cmd(
    workdir: Path | None, scheduler: str | None, n_workers: int | None, quiet: bool
) -> None:
    """Run ingest, run and report on sample photos of installed packages."""
    from pupsnr_dask import query, samples
    from pupsnr_dask.experiment import run_experiment
    from pupsnr_dask.ingest import ingest_folder
    from pupsnr_dask.report.summary import format_summary

    kept = (
        "" if workdir else " (a temporary folder, deleted when the demo ends; --workdir keeps it)"
    )
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pupsnr-")))
        workdir.mkdir(parents=True, exist_ok=True)
        src, store, results = workdir / "samples", workdir / "data.zarr", workdir / "psnr.zarr"
        copies = samples.write_samples(src)
        click.echo(f"{len(copies)} sample images in {src}{kept}")
        with cluster_context(scheduler, n_workers, quiet):
            summary = ingest_folder(
                str(src), str(store), overwrite=True, progress=False if quiet else None
            )
            click.echo("\n".join(summary.lines()))
            ds = run_experiment(
                str(store), str(results), overwrite=True, progress=False if quiet else None
            )
        click.echo("")
        click.echo(format_summary(query.summarize(ds), "text"))
