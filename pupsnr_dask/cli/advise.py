"""``pupsnr advise``: a model's output quality against p_i, depth by depth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pupsnr_dask.cli.options import (
    absolute,
    absolute_or_none,
    cluster_context,
    cluster_options,
    csv_list,
    storage_option,
)
from pupsnr_dask.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONFIDENCE,
    DEFAULT_MARGIN_DB,
    DEFAULT_METRIC,
    DEFAULT_PROVIDERS,
    FORMATS,
    METRIC_NAMES,
    MODEL_LAYOUTS,
    MODEL_RANGES,
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
    "--model",
    "model",
    default=None,
    metavar="MODEL.onnx",
    help="Instead of --predictions: an ONNX image-to-image model, run on the Dask workers "
    "(one onnxruntime session per worker process; every worker must see the file). img_true "
    "is turned into --variant exactly as `pupsnr run` does, fed to the model in batches of "
    "--batch-size, and its outputs are rounded to uint8 as an image file stores them (clipped "
    "to the output range, scaled to 0-255, rounded half to even) before they are compared "
    'with img_true. Needs pip install "pupsnr-dask[model]".',
)
@click.option(
    "--variant",
    required=True,
    metavar="NAME",
    help="The input the model sees: any variant RESULTS holds (gray: colourisation, mosaic: "
    "mosaic removal, sr4: super-resolution, ...).",
)
@click.option(
    "--metric",
    type=click.Choice(METRIC_NAMES),
    default=DEFAULT_METRIC,
    show_default=True,
    help="Quality measure of the outputs and of p_i; RESULTS must hold it (`pupsnr run "
    "--metrics`). Higher is better for each.",
)
@click.option(
    "--layout",
    type=click.Choice(MODEL_LAYOUTS),
    default=None,
    help="--model: layout of its input and output [default: read from the graph].",
)
@click.option(
    "--input-range",
    type=click.Choice(MODEL_RANGES),
    default=None,
    help="--model: its input values: unit = float [0, 1], signed = float [-1, 1], uint8 = "
    "0-255 [default: the model's pupsnr.input_range metadata, or uint8 for a uint8 tensor].",
)
@click.option(
    "--output-range",
    type=click.Choice(MODEL_RANGES),
    default=None,
    help="--model: its output values, as --input-range [default: from the graph].",
)
@click.option(
    "--providers",
    default=",".join(DEFAULT_PROVIDERS),
    metavar="NAMES",
    show_default=True,
    callback=csv_list(str),
    help="--model: onnxruntime execution providers in order of preference, comma-separated; "
    "each worker uses those it has (CUDAExecutionProvider,CPUExecutionProvider on GPU "
    "workers with onnxruntime-gpu).",
)
@click.option(
    "--save-outputs",
    default=None,
    metavar="STORE",
    help="--model: keep its outputs (rounded to uint8) as an images store, which "
    "--predictions STORE reads back. Resumable: rerunning after an interruption continues "
    "from the chunks written; complete outputs of the same model and input are not "
    "recomputed.",
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
    help="Also draw the output PSNR against the p_i curve (a file already there is replaced "
    "only if pupsnr wrote it).",
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
    help="Predictions (or model inputs) per task.",
)
@storage_option
@cluster_options("advise")
def advise_cmd(
    results: str,
    predictions: str | None,
    output_psnr: float | None,
    model: str | None,
    variant: str,
    metric: str,
    layout: str | None,
    input_range: str | None,
    output_range: str | None,
    providers: tuple[str, ...],
    save_outputs: str | None,
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

    if sum(x is not None for x in (predictions, output_psnr, model)) != 1:
        raise click.UsageError("give exactly one of --predictions, --output-psnr and --model")
    model_only = {
        "--layout": layout,
        "--input-range": input_range,
        "--output-range": output_range,
        "--save-outputs": save_outputs,
    }
    if model is None:
        given = [name for name, value in model_only.items() if value is not None]
        if given or providers != DEFAULT_PROVIDERS:
            raise click.UsageError(f"{(given or ['--providers'])[0]} needs --model")
    results, images = absolute(results), absolute_or_none(images)
    predictions, save_outputs = absolute_or_none(predictions), absolute_or_none(save_outputs)
    model = absolute_or_none(model)
    if plot_path:
        plots.figure_path(plot_path)  # matplotlib, the folder and the format, before any work
    where: dict[str, Any] = {
        "variant": variant,
        "split": split,
        "metric": metric,
        "storage_options": storage_options,
    }
    # a damaged chunk of the images (or prediction) store, named
    with damage_named(images, results, predictions, storage_options=storage_options):
        if output_psnr is not None:
            ds = advise_depths(results, output_psnr=output_psnr, margin_db=margin_db, **where)
        else:  # check, pair and inspect everything before starting a cluster
            options = {
                "layout": layout,
                "input_range": input_range,
                "output_range": output_range,
                "providers": providers,
            }
            plan = plan_advice(
                results,
                predictions,
                model=model,
                model_options=options if model is not None else None,
                save_outputs=save_outputs,
                images=images,
                **where,
            )
            with cluster_context(scheduler, n_workers, quiet):
                ds = run_advice(
                    plan,
                    confidence=confidence,
                    margin_db=margin_db,
                    batch_size=batch_size,
                    progress=False if quiet else None,
                    notify=lambda line: click.echo(line, err=True),
                )
    if fmt == "csv" and "matching_report" in ds.attrs:
        click.echo("\n".join(ds.attrs["matching_report"]), err=True)
    click.echo(format_advice(ds, fmt))
    if save_outputs and not quiet:
        click.echo(f"model outputs in {save_outputs}", err=True)
    if plot_path:
        written = plots.save_figure(plot_advice(ds), plot_path)
        click.echo(f"plot written to {written}", err=True)
