"""The ``pupsnr`` command: ingest, run, report, grid, advise, verify, demo, export.

``main(argv)`` returns an exit code: 0 on success; 2 for a usage or input error, a store, file,
scheduler or storage endpoint that cannot be used (one line on standard error, no traceback);
130 when interrupted (one line: rerunning the same command resumes); :data:`EXIT_INTERNAL` (70)
for a bug, with its traceback and a line saying so.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from pupsnr_dask import experiment, helptext, query, schema, verify
from pupsnr_dask.advise import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONFIDENCE,
    DEFAULT_MARGIN_DB,
    advise_depths,
    plan_advice,
    run_advice,
)
from pupsnr_dask.cluster import (
    DEFAULT_NO_WORKER_TIMEOUT,
    DEFAULT_TIMEOUT,
    NO_WORKER_TIMEOUT_ENV,
    SCHEDULER_ENV,
    TLS_ENV,
    WorkerDiedError,
    connect,
)
from pupsnr_dask.grid import pu_grid
from pupsnr_dask.ingest import DEFAULT_CHUNK_SIZE, DEFAULT_SIZE, DEFAULT_THRESHOLD, ingest_folder
from pupsnr_dask.report import html, plots, tables
from pupsnr_dask.report.advice import format_advice
from pupsnr_dask.report.advice_plot import plot_advice
from pupsnr_dask.report.summary import format_summary
from pupsnr_dask.store.fs import StorageOptions, absolute, parse_storage_options, store_exists
from pupsnr_dask.store.integrity import damage_named, unfinished
from pupsnr_dask.store.zarr_io import open_store

#: Errors of the environment, whoever raises them: a file, a store, a scheduler, a missing
#: optional package. One line, exit status 2.
ENVIRONMENT_ERRORS = (OSError, ImportError, ConnectionError, TimeoutError, WorkerDiedError)
#: Errors that pupsnr raises itself about a value it was given (validation, a damaged store).
#: One line, exit status 2 -- when pupsnr raised them; raised inside a library, they are bugs.
VALUE_ERRORS = (ValueError,)
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
INTERRUPTED = "pupsnr: interrupted; rerun the same command to resume"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _csv_list(kind: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str], tuple]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError as err:
            raise click.BadParameter(f"{value!r}: {err}") from err

    return parse


STORAGE_OPTIONS_ENV = "PUPSNR_STORAGE_OPTIONS"


def _absolute_or_none(location: str | None) -> str | None:
    return None if location is None else absolute(location)


_CONNECT_META = "pupsnr.connect"


def _connect_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a connection setting for :func:`_cluster` (not passed to the command itself)."""
    ctx.meta.setdefault(_CONNECT_META, {})[param.name] = value


def _storage_options(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> StorageOptions | None:
    try:
        return parse_storage_options(value)
    except ValueError as err:  # one line, exit 2 (see main), and the value is not repeated
        raise ValueError(f"--storage-options: {err}") from None


def storage_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--storage-options`` option of the commands that read or write stores."""
    return click.option(
        "--storage-options",
        envvar=STORAGE_OPTIONS_ENV,
        default=None,
        metavar="JSON",
        callback=_storage_options,
        help="fsspec options for fsspec URLs such as s3://bucket/data.zarr, as a JSON object, "
        f'e.g. {{"endpoint_url": "http://127.0.0.1:9000"}} (or ${STORAGE_OPTIONS_ENV}). '
        "Credentials are best left to the environment (AWS_ACCESS_KEY_ID, ...); they are never "
        "written to stores or shown.",
    )(f)


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the commands that compute on a Dask cluster."""
    for name, what in (
        ("tls_key", "private key of --tls-cert"),
        ("tls_cert", "certificate of this client"),
        ("tls_ca_file", "certificate authority"),
    ):
        f = click.option(
            "--" + name.replace("_", "-"),
            default=None,  # connect() reads $PUPSNR_TLS_*, for tls:// addresses only
            metavar="PEM",
            expose_value=False,
            callback=_connect_option,
            help=f"For a tls:// scheduler: {what} (or ${TLS_ENV[name]}).",
        )(f)
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        expose_value=False,
        callback=_connect_option,
        help="Seconds to wait for an existing scheduler to answer before failing. A scheduler "
        "lost during a run fails the run at once, with an error.",
    )(f)
    f = click.option(
        "--no-worker-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        expose_value=False,
        callback=_connect_option,
        help="Give up (exit 2; rerunning resumes) when the cluster has had no worker for this "
        f"long during a computation (or ${NO_WORKER_TIMEOUT_ENV}) "
        f"[default: {DEFAULT_NO_WORKER_TIMEOUT:g}].",
    )(f)
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
    settings = click.get_current_context().meta.get(_CONNECT_META, {})
    with warnings.catch_warnings():
        if quiet:  # distributed's "Port 8787 is already in use" (the dashboard moves)
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        with connect(scheduler, n_workers=n_workers, quiet=quiet, **settings):
            yield


class _Interrupted(Exception):
    """A KeyboardInterrupt, carried past click (which would print a blank line for it)."""


class _Group(click.Group):
    context_class = helptext.Context  # help never breaks inside --tls-cert
    command_class = helptext.Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise _Interrupted from err


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="pupsnr-dask", prog_name="pupsnr")
def cli() -> None:
    """How much image quality survives at each depth of a U-Net.

    Typical use: ingest a folder of images, run the experiment, report the table.

    \b
      pupsnr ingest SRC -o data.zarr
      pupsnr run data.zarr -o psnr.zarr
      pupsnr report psnr.zarr [--plot p.png] [--html report.html]
      pupsnr grid data.zarr --image 0 -o grid.png
      pupsnr advise psnr.zarr --predictions MODEL_OUTPUTS --variant gray
      pupsnr verify data.zarr
      pupsnr export psnr.zarr -o table.parquet   # or .csv, .nc: one row per image
      pupsnr demo            # ingest, run, report on bundled sample photos
    """  # noqa: D301


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
@cluster_options
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
    """Keep the colour images below SRC, resize them, store them in one Zarr array."""
    src, store = absolute(src), absolute(store)
    with _cluster(scheduler, n_workers, quiet):
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
@click.option(
    "--overwrite",
    is_flag=True,
    help="Discard RESULTS and any interrupted run into it, and compute again. Without it, an "
    "interrupted run is resumed and complete RESULTS are left as they are.",
)
@storage_option
@cluster_options
def run_cmd(
    store: str,
    results: str,
    variants: tuple[str, ...],
    scales: tuple[int, ...],
    method: experiment.Method,
    overwrite: bool,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Compute PSNR by image x variant x scale for an ingested STORE."""
    store, results = absolute(store), absolute(results)
    images = open_store(store, "images", storage_options=storage_options)
    experiment.check_selection(variants, scales, images.sizes[schema.Y])
    with _cluster(scheduler, n_workers, quiet):
        ds = experiment.run_experiment(
            store,
            results,
            variants=variants,
            scales=scales,
            method=method,
            overwrite=overwrite,
            storage_options=storage_options,
            progress=False if quiet else None,
            notify=click.echo,
        )
    click.echo(
        f"PSNR of {ds.sizes[schema.IMAGE]} images x {ds.sizes[schema.VARIANT]} variants "
        f"x {ds.sizes[schema.SCALE]} scales in {results}"
    )


@cli.command("report")
@click.argument("results")
@click.option(
    "--format", "fmt", type=click.Choice(tables.FORMATS), default="text", show_default=True
)
@click.option(
    "--split",
    type=click.Choice([*schema.SPLITS, "all"]),
    default="all",
    show_default=True,
    help="Which images to summarise.",
)
@click.option(
    "--plot",
    "plot_file",
    default=None,
    metavar="FILE.png",
    help="Also draw PSNR against scale, with its spread, to FILE.png (needs matplotlib).",
)
@click.option(
    "--html",
    "html_file",
    default=None,
    metavar="FILE.html",
    help="Also write one self-contained HTML page: tables, plots, best and worst images with "
    "their PU grids, provenance.",
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
    default=html.DEFAULT_TOP,
    show_default=True,
    help="Images with the lowest and the highest PSNR shown per variant and scale in --html.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@storage_option
def report_cmd(
    results: str,
    fmt: tables.Format,
    split: experiment.Split,
    plot_file: str | None,
    html_file: str | None,
    images: str | None,
    top: int,
    quiet: bool,
    storage_options: StorageOptions | None,
) -> None:
    """Print mean PSNR by variant x scale (see docs/definitions.md), with counts and spread."""
    if images is not None and html_file is None:
        raise click.UsageError("--images is used only with --html")
    results, images = absolute(results), _absolute_or_none(images)
    for out in (plot_file, html_file):
        if out is not None and not Path(out).resolve().parent.is_dir():
            raise FileNotFoundError(f"folder of {out!r} does not exist")
    ds = open_store(results, "psnr", storage_options=storage_options)
    click.echo(format_summary(query.summarize(ds, split), fmt))
    progress = False if quiet else None
    if plot_file is not None:
        written = plots.save_figure(plots.plot_psnr(ds, split, progress=progress), plot_file)
        click.echo(f"pupsnr: plot written to {written}", err=True)
    if html_file is not None:
        with damage_named(images, results, storage_options=storage_options):
            _, note = html.write_html(
                results,
                html_file,
                images=images,
                split=split,
                top=top,
                storage_options=storage_options,
                progress=progress,
            )
        click.echo(f"pupsnr: HTML report written to {html_file} ({note})", err=True)


@cli.command("grid")
@click.argument("store")
@click.option(
    "--image",
    required=True,
    metavar="SOURCE_OR_INDEX",
    help="The image: its index, its source path, or the end of the path (coffee.png).",
)
@click.option("-o", "--output", required=True, metavar="FILE.png", help="Picture to write.")
@click.option(
    "--variants",
    default=",".join(experiment.VARIANTS),
    show_default=True,
    callback=_csv_list(str),
    help="Rows, comma-separated.",
)
@click.option(
    "--scales",
    default=",".join(map(str, experiment.SCALES)),
    show_default=True,
    callback=_csv_list(int),
    help="Columns, comma-separated (scale 1, the original, always comes first).",
)
@click.option(
    "--dpi",
    type=click.IntRange(20, 600),
    default=plots.DEFAULT_DPI,
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
    plots.require_matplotlib()
    store = absolute(store)
    ds = open_store(store, "images", storage_options=storage_options)
    with damage_named(store, storage_options=storage_options):
        cells = pu_grid(ds, image, variants, scales)
    written = plots.save_figure(plots.grid_figure(cells), output, dpi=dpi)
    where = f"image {cells.attrs['image']} ({cells.attrs['source']})"
    click.echo(f"PU grid of {where} written to {written}")


@cli.command("advise")
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
    type=click.Choice(tuple(experiment.VARIANTS)),
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
    type=click.Choice([*schema.SPLITS, "all"]),
    default="all",
    show_default=True,
    help="Which images to compare on.",
)
@click.option(
    "--format", "fmt", type=click.Choice(tables.FORMATS), default="text", show_default=True
)
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
    split: experiment.Split,
    fmt: tables.Format,
    plot_path: str | None,
    confidence: float,
    margin_db: float,
    batch_size: int,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> None:
    """Which U-Net depths does a model really use? Its output PSNR against p_i per depth."""
    if (predictions is None) == (output_psnr is None):
        raise click.UsageError("give exactly one of --predictions and --output-psnr")
    results, images = absolute(results), _absolute_or_none(images)
    predictions = _absolute_or_none(predictions)
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
            with _cluster(scheduler, n_workers, quiet):
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


@cli.command("verify")
@click.argument("store")
@click.option(
    "--images",
    default=None,
    metavar="STORE",
    help="For a results store: its images store [default: the one recorded in it].",
)
@click.option(
    "--recompute",
    default=str(verify.DEFAULT_RECOMPUTE),
    show_default=True,
    metavar="N|all",
    help="For a results store: image chunks recomputed and compared exactly.",
)
@storage_option
@cluster_options
def verify_cmd(
    store: str,
    images: str | None,
    recompute: str,
    storage_options: StorageOptions | None,
    scheduler: str | None,
    n_workers: int | None,
    quiet: bool,
) -> int:
    """Check STORE thoroughly; exit status 1 and a list of defects when it is not sound.

    Checks the layout, dtypes and shapes, that every chunk is present and readable, and that a
    results store matches its images (labels, and a sample of chunks recomputed exactly).
    """
    if recompute != "all" and not recompute.isdigit():
        raise click.BadParameter(
            f"must be a number or 'all', got {recompute!r}", param_hint="--recompute"
        )
    store, images = absolute(store), _absolute_or_none(images)
    if not store_exists(store, storage_options) and not unfinished(store, storage_options):
        raise FileNotFoundError(f"no store at {store!r}")
    with _cluster(scheduler, n_workers, quiet):
        found = verify.verify_store(
            store,
            images=images,
            recompute=None if recompute == "all" else int(recompute),
            storage_options=storage_options,
            progress=False if quiet else None,
        )
    click.echo("\n".join(found.lines()))
    return 0 if found.ok else 1


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
        with _cluster(scheduler, n_workers, quiet):
            summary = ingest_folder(
                str(src), str(store), overwrite=True, progress=False if quiet else None
            )
            click.echo("\n".join(summary.lines()))
            ds = experiment.run_experiment(
                str(store), str(results), overwrite=True, progress=False if quiet else None
            )
        click.echo("")
        click.echo(format_summary(query.summarize(ds), "text"))


@cli.command("export")
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
    storage_options: schema.StorageOptions | None,
) -> None:
    """Write the per-image table of RESULTS: one row per image x variant x scale.

    Columns image, source, split, variant, scale, resolution, psnr, mse and every other
    per-image metric of RESULTS, as stored, to join with a training log on source and scale.
    A PSNR of +inf (an image identical to its PU transform) stays +inf in Parquet and NetCDF
    and is written inf in CSV (NaN as nan); pandas reads both back as floats.
    """
    from pupsnr_dask import export

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pupsnr`` command line; return the exit code."""
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None, prog_name="pupsnr", standalone_mode=False
        )
    except (click.exceptions.Abort, KeyboardInterrupt, _Interrupted):
        click.echo(INTERRUPTED, err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            traceback.print_exception(err, file=sys.stderr)
            click.echo(
                f"pupsnr: internal error: {type(err).__name__} (a bug in pupsnr, not in your "
                "input; please report it with the traceback above)",
                err=True,
            )
            return EXIT_INTERNAL
        click.echo(f"pupsnr: error: {message}", err=True)
        return 2
    return rv if isinstance(rv, int) else 0


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of an error the user can act on, or None for a bug.

    Environment errors (:data:`ENVIRONMENT_ERRORS`, object storage that cannot be reached or
    used) are the user's whatever raised them; a :data:`VALUE_ERRORS` error only when pupsnr
    raised it. Everything else -- a TypeError, an error raised inside a library -- is a bug.
    """
    storage = _storage_error(err)
    if storage is not None:
        return storage
    if isinstance(err, UnicodeError):  # names and text are pupsnr's to handle: a bug
        return None
    if isinstance(err, ENVIRONMENT_ERRORS):
        return _redact(str(err)) or type(err).__name__
    if isinstance(err, VALUE_ERRORS) and _raised_by_pupsnr(err):
        return str(err)
    return None


def _raised_by_pupsnr(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIR)


def _storage_error(err: BaseException) -> str | None:
    """One line for an error of the object storage client (botocore), wherever raised."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if any(c.__module__.startswith("botocore") for c in type(err).__mro__):
            endpoint = getattr(err, "kwargs", {}).get("endpoint_url")
            where = f" at {_redact(endpoint)}" if endpoint else ""
            return f"object storage{where}: {_redact(str(err))}"
        err = err.__cause__ or err.__context__
    return None


def _redact(text: str) -> str:
    """``text`` without the user:password part and the query string of the URLs in it."""
    text = re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"']*@", r"\1", text)
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^?\s\"']*)\?[^\s\"']*", r"\1", text)


if __name__ == "__main__":
    sys.exit(main())
