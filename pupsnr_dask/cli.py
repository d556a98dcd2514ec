"""The ``pupsnr`` command: ingest, run, report, demo.

``main(argv)`` returns an exit code: 0 on success, 2 for a usage or input error (one line on
standard error, no traceback), 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from pupsnr_dask import experiment, report, schema
from pupsnr_dask.cluster import SCHEDULER_ENV, connect
from pupsnr_dask.ingest import DEFAULT_CHUNK_SIZE, DEFAULT_SIZE, DEFAULT_THRESHOLD, ingest

USER_ERRORS = (
    ValueError,
    TypeError,
    OSError,
    ImportError,
    ConnectionError,
    TimeoutError,
)


def _csv_list(kind: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str], tuple]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError as err:
            raise click.BadParameter(f"{value!r}: {err}") from err

    return parse


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the commands that compute on a Dask cluster."""
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars or dashboard link.")(f)
    f = click.option(
        "--n-workers",
        type=click.IntRange(min=1),
        default=None,
        help="Worker processes of the local cluster [default: one per CPU core].",
    )(f)
    f = click.option(
        "--scheduler",
        envvar=SCHEDULER_ENV,
        default=None,
        metavar="ADDRESS",
        help=f"Use the existing Dask scheduler at ADDRESS (or ${SCHEDULER_ENV}) instead of "
        "starting a local cluster.",
    )(f)
    return f


@contextlib.contextmanager
def _cluster(scheduler: str | None, n_workers: int | None, quiet: bool) -> Iterator[None]:
    with connect(scheduler, n_workers=n_workers, quiet=quiet):
        yield


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pupsnr-dask", prog_name="pupsnr")
def cli() -> None:
    r"""How much image quality survives at each depth of a U-Net.

    Typical use: ingest a folder of images, run the experiment, report the table.

    \b
      pupsnr ingest SRC -o data.zarr
      pupsnr run data.zarr -o psnr.zarr
      pupsnr report psnr.zarr
      pupsnr demo            # all three on bundled sample photos
    """


@cli.command("ingest")
@click.argument("src")
@click.option(
    "-o", "--output", "store", required=True, metavar="STORE", help="Zarr store to write."
)
@click.option(
    "--size",
    type=int,
    default=DEFAULT_SIZE,
    show_default=True,
    help="Side of the square output images (a multiple of 16).",
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
@click.option("--overwrite", is_flag=True, help="Replace STORE if it exists.")
@cluster_options
def ingest_cmd(
    src: str,
    store: str,
    size: int,
    threshold: float,
    test_count: int,
    chunk_size: int,
    overwrite: bool,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Keep the colour images below SRC, resize them, store them in one Zarr array."""
    with _cluster(scheduler, n_workers, quiet):
        summary = ingest(
            src,
            store,
            size=size,
            threshold=threshold,
            test_count=test_count,
            chunk_size=chunk_size,
            overwrite=overwrite,
            progress=False if quiet else None,
        )
    click.echo("\n".join(summary.lines()))


@cli.command("run")
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
    default=",".join(experiment.VARIANTS),
    show_default=True,
    callback=_csv_list(str),
    help=f"Comma-separated, of {', '.join(experiment.VARIANTS)}.",
)
@click.option(
    "--scales",
    default=",".join(map(str, experiment.SCALES)),
    show_default=True,
    callback=_csv_list(int),
    help="Comma-separated PU scales, each dividing the size.",
)
@click.option(
    "--method",
    type=click.Choice(experiment.METHODS),
    default="moments",
    show_default=True,
    help="'literal' upsamples and subtracts (the reference).",
)
@click.option("--overwrite", is_flag=True, help="Replace RESULTS if it exists.")
@cluster_options
def run_cmd(
    store: str,
    results: str,
    variants: tuple[str, ...],
    scales: tuple[int, ...],
    method: experiment.Method,
    overwrite: bool,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Compute PSNR by image x variant x scale for an ingested STORE."""
    images = schema.open_store(store, "images")
    experiment.check_selection(variants, scales, images.sizes[schema.Y])
    with _cluster(scheduler, n_workers, quiet):
        ds = experiment.run(
            store,
            results,
            variants=variants,
            scales=scales,
            method=method,
            overwrite=overwrite,
            progress=False if quiet else None,
        )
    click.echo(
        f"PSNR of {ds.sizes[schema.IMAGE]} images x {ds.sizes[schema.VARIANT]} variants "
        f"x {ds.sizes[schema.SCALE]} scales written to {results}"
    )


@cli.command("report")
@click.argument("results")
@click.option(
    "--format", "fmt", type=click.Choice(report.FORMATS), default="text", show_default=True
)
@click.option(
    "--split",
    type=click.Choice([*schema.SPLITS, "all"]),
    default="all",
    show_default=True,
    help="Which images to summarise.",
)
def report_cmd(results: str, fmt: report.Format, split: experiment.Split) -> None:
    """Print mean PSNR by variant x scale (SPEC.md's table), with counts and spread."""
    ds = schema.open_store(results, "psnr")
    click.echo(report.format_summary(experiment.summarize(ds, split), fmt))


@cli.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the sample images and stores here [default: a temporary folder].",
)
@cluster_options
def demo_cmd(
    workdir: Path | None, scheduler: str | None, n_workers: int | None, quiet: bool
) -> None:
    """Run ingest, run and report on sample photos bundled with installed packages."""
    from pupsnr_dask import samples

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pupsnr-")))
        workdir.mkdir(parents=True, exist_ok=True)
        src, store, results = workdir / "samples", workdir / "data.zarr", workdir / "psnr.zarr"
        copies = samples.write_samples(src)
        click.echo(f"{len(copies)} sample images in {src}")
        with _cluster(scheduler, n_workers, quiet):
            summary = ingest(
                str(src), str(store), overwrite=True, progress=False if quiet else None
            )
            click.echo("\n".join(summary.lines()))
            ds = experiment.run(
                str(store), str(results), overwrite=True, progress=False if quiet else None
            )
        click.echo("")
        click.echo(report.format_summary(experiment.summarize(ds), "text"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pupsnr`` command line; return the exit code."""
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None, prog_name="pupsnr", standalone_mode=False
        )
    except click.exceptions.Abort:
        click.echo("pupsnr: interrupted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except USER_ERRORS as err:
        click.echo(f"pupsnr: error: {err}", err=True)
        return 2
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
