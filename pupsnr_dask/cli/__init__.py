"""The ``pupsnr`` command: ingest, run, report, grid, advise, verify, demo, export.

``main(argv)`` returns an exit code: 0 on success; 2 for a usage or input error, a store, file,
scheduler or storage endpoint that cannot be used (one line on standard error, no traceback);
130 when interrupted (one line: rerunning the same command resumes); :data:`EXIT_INTERNAL` (70)
for a bug, with its traceback and a line saying so.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from pupsnr_dask import helptext

#: The commands, in the order of ``pupsnr --help``: module of ``pupsnr_dask.cli`` and one line
#: of help. A command's module is imported only when it is run or asked for its help, so that
#: ``pupsnr --help`` and argument errors answer before dask, xarray or zarr are imported.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("ingest", "Keep the colour images below SRC, resized, in one Zarr store."),
    "run": ("run", "Compute PSNR by image x variant x scale for an ingested STORE."),
    "report": ("report", "Print mean PSNR by variant x scale, with counts and spread."),
    "grid": ("grid", "Draw the PU grid of one image of an ingested STORE."),
    "advise": ("advise", "Which U-Net depths does a model really use? Output PSNR against p_i."),
    "verify": ("verify", "Check STORE thoroughly; exit status 1 and a list of defects if unsound."),
    "export": ("export", "Write RESULTS as a table: one row per image x variant x scale."),
    "variants": ("variants", "List every input and metric of `pupsnr run`, with its definition."),
    "demo": ("demo", "Run ingest, run and report on sample photos of installed packages."),
}
#: Errors of the environment, whoever raises them: a file, a store, a scheduler, a missing
#: optional package (and :class:`pupsnr_dask.cluster.WorkerDiedError`). One line, exit status 2.
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ImportError,
    ConnectionError,
    TimeoutError,
)
#: Errors that pupsnr raises itself about a value it was given (validation, a damaged store).
#: One line, exit status 2 -- when pupsnr raised them; raised inside a library, they are bugs.
VALUE_ERRORS = (ValueError,)
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
INTERRUPTED = "pupsnr: interrupted; rerun the same command to resume"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The packages whose frames mark a Dask computation: dask's schedulers, distributed's workers.
_COMPUTE_PACKAGES = ("dask", "distributed")


class _Interrupted(Exception):
    """A KeyboardInterrupt, carried past click (which would print a blank line for it)."""


class _Group(click.Group):
    """The ``pupsnr`` group, loading each command from :data:`COMMANDS` when it is needed."""

    context_class = helptext.Context  # help never breaks inside --tls-cert
    command_class = helptext.Command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__name__}.{COMMANDS[cmd_name][0]}")
        command: click.Command = getattr(module, f"{cmd_name}_cmd")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their one-line help, without importing them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])

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


def console() -> None:
    """The ``pupsnr`` program and ``python -m pupsnr_dask``: :func:`main`, exiting with its code.

    What is left when the command is done -- the modules of dask, distributed, xarray, zarr and
    their objects -- is frozen out of the garbage collector first: the interpreter's teardown
    then skips collecting it (0.17 s of every command with those modules loaded, 0.02 s frozen;
    benchmarks/RESULTS.md). Everything the command wrote is closed by then; exit handlers run.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of an error the user can act on, or None for a bug.

    Environment errors (:data:`ENVIRONMENT_ERRORS`, object storage that cannot be reached or
    used) are the user's whatever raised them; a :data:`VALUE_ERRORS` error only when pupsnr
    raised it outside a Dask computation (pupsnr checks its input before it computes). Everything
    else -- a TypeError, an error raised inside a library or inside a task -- is a bug.
    """
    storage = _storage_error(err)
    if storage is not None:
        return storage
    if isinstance(err, UnicodeError):  # names and text are pupsnr's to handle: a bug
        return None
    if isinstance(err, ENVIRONMENT_ERRORS) or _worker_died(err):
        return _redact(str(err)) or type(err).__name__
    if isinstance(err, VALUE_ERRORS) and _raised_by_pupsnr(err) and not _inside_compute(err):
        return str(err)
    return None


def _worker_died(err: BaseException) -> bool:
    cluster = sys.modules.get("pupsnr_dask.cluster")  # no cluster imported: no worker died
    return cluster is not None and isinstance(err, cluster.WorkerDiedError)


def _raised_by_pupsnr(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIR)


def _inside_compute(err: BaseException) -> bool:
    """Whether ``err`` was raised inside a Dask task: pupsnr checks its input before computing."""
    dirs = []
    for name in _COMPUTE_PACKAGES:  # located, not imported
        spec = importlib.util.find_spec(name)
        dirs += [
            os.path.abspath(d) + os.sep for d in (spec and spec.submodule_search_locations) or ()
        ]
    frames = traceback.extract_tb(err.__traceback__)
    return any(os.path.abspath(f.filename).startswith(tuple(dirs)) for f in frames)


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
    console()
