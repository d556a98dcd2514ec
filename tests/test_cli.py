from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import random_photo, write_image

from pupsnr_dask.cli import main


@pytest.fixture()
def small_src(tmp_path):
    rng = np.random.default_rng(7)
    for i in range(5):
        write_image(tmp_path / "src" / f"sub/img{i}.png", random_photo(rng, 70, 90))
    write_image(tmp_path / "src" / "gray.png", random_photo(rng, 70, 90)[..., 0])
    return tmp_path / "src"


def test_ingest_run_report_end_to_end(small_src, tmp_path, capsys):
    store, results = tmp_path / "d.zarr", tmp_path / "p.zarr"
    assert (
        main(["ingest", str(small_src), "-o", str(store), "--n-workers", "1", "-q", "--size", "64"])
        == 0
    )
    out = capsys.readouterr().out
    assert "6 files, 5 colour images" in out and "rejected 1: not colour" in out
    assert (
        main(["run", str(store), "-o", str(results), "--scales", "1,2,4", "--n-workers", "1", "-q"])
        == 0
    )
    ds = xr.open_zarr(results)
    assert list(ds["scale"].values) == [1, 2, 4]
    assert list(ds["resolution"].values) == [64, 32, 16]
    capsys.readouterr()
    assert main(["report", str(results)]) == 0
    text = capsys.readouterr().out
    assert "Mean PSNR (dB)" in text and "—" in text and "5 images" in text
    assert main(["report", str(results), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {(r["variant"], r["scale"]): r for r in data["rows"]}
    assert rows["true", 1]["mean_psnr_db"] is None and rows["true", 1]["n_infinite"] == 5
    expected = float(ds["psnr"].sel(variant="gray", scale=2).mean())
    assert rows["gray", 2]["mean_psnr_db"] == pytest.approx(expected)
    assert main(["report", str(results), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 9 and float(table[0]["mean_psnr_db"]) == float("inf")
    assert main(["report", str(results), "--format", "markdown"]) == 0
    assert "| scale | resolution | true | gray | mosaic |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "{tmp}/missing", "-o", "{tmp}/x.zarr"], "does not exist"),
        (["ingest", "{tmp}/emptydir", "-o", "{tmp}/x.zarr"], "contains no files"),
        (["ingest", "{src}", "-o", "{tmp}/exists"], "already exists"),
        (["ingest", "{src}", "-o", "{tmp}/x.zarr", "--size", "100"], "multiple of 32"),
        (["run", "{tmp}/missing.zarr", "-o", "{tmp}/r.zarr"], "no store"),
        (["run", "{tmp}/exists", "-o", "{tmp}/r.zarr"], "not a readable Zarr store"),
        (["run", "{tmp}/foreign.zarr", "-o", "{tmp}/r.zarr"], "not a pupsnr store"),
        (["report", "{tmp}/foreign.zarr"], "not a pupsnr store"),
        (["run", "{store}", "-o", "{tmp}/r.zarr", "--scales", "1,3"], "positive divisor"),
        (["run", "{store}", "-o", "{tmp}/r.zarr", "--variants", "sepia"], "variant must be one of"),
        (["run", "{store}", "-o", "{tmp}/r.zarr", "--scales", "x"], "Invalid value"),
        (["report", "{store}"], "pupsnr 'images' store; expected a pupsnr 'psnr'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args, message, tmp_path, small_src, images_store, capsys):
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "exists").mkdir()
    xr.Dataset({"a": ("x", [1, 2])}).to_zarr(tmp_path / "foreign.zarr", consolidated=False)
    argv = [a.format(tmp=tmp_path, src=small_src, store=images_store) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "ingest" in out and "advise" in out
    assert "\\b" not in out  # click's no-rewrap marker must not leak into the help
    assert "  pupsnr run data.zarr -o psnr.zarr\n" in out
    assert main(["--version"]) == 0
    assert "pupsnr" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["program", "module"])
def test_the_pupsnr_program_exits_with_its_commands_code_and_all_its_output(how, tmp_path):
    """The installed ``pupsnr`` and ``python -m pupsnr_dask`` (``cli.console``, which freezes
    the garbage collector before exit): the command's own exit status, nothing cut short."""
    from importlib.metadata import entry_points

    from pupsnr_dask.cli import COMMANDS

    (script,) = entry_points(group="console_scripts", name="pupsnr")
    assert script.value == "pupsnr_dask.cli:console"
    if how == "program":  # where pip put it for this interpreter, else on PATH
        program = Path(sysconfig.get_path("scripts")) / "pupsnr"
        prefix = [str(program) if program.is_file() else shutil.which("pupsnr")]
        assert prefix[0], "the pupsnr program is not installed for this Python"
    else:
        prefix = [sys.executable, "-m", "pupsnr_dask"]
    helped = subprocess.run([*prefix, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.rstrip().endswith(COMMANDS["demo"][1])  # the whole help, to its end
    missing = subprocess.run(
        [*prefix, "ingest", str(tmp_path / "nowhere"), "-o", str(tmp_path / "d.zarr")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"pupsnr: error: SRC '{tmp_path / 'nowhere'}' does not exist"
    assert not (tmp_path / "d.zarr").exists()


def test_demo_console_script_end_to_end(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pupsnr_dask",
            "demo",
            "--workdir",
            str(tmp_path),
            "--n-workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "colour images stored" in proc.stdout
    assert "Mean PSNR (dB)" in proc.stdout
    assert "dashboard http://127.0.0.1:" in proc.stderr
    ds = xr.open_zarr(tmp_path / "psnr.zarr")
    assert ds.sizes["image"] >= 10
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("command", "default"),
    [("ingest", "processes"), ("run", "threads"), ("verify", "threads"), ("advise", "threads"),
     ("demo", "threads")],
)  # fmt: skip
def test_each_command_help_shows_its_own_local_cluster_default(command, default, capsys):
    """ingest's workers are processes (untrusted decoders); the others run threads."""
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    found = re.search(r"--processes / --threads .*?\[default: (\w+)\]", text)
    assert found is not None and found.group(1) == default, text


@pytest.mark.parametrize("columns", ["60", "80", "100"])
def test_help_never_breaks_inside_a_word(columns, capsys, monkeypatch):
    from pupsnr_dask.cli import COMMANDS

    monkeypatch.setenv("COLUMNS", columns)
    for name in ["", *COMMANDS]:
        assert main([name, "--help"] if name else ["--help"]) == 0
        out = capsys.readouterr().out
        broken = [line for line in out.splitlines() if re.search(r"\w-$", line)]
        assert not broken, f"pupsnr {name} --help at {columns} columns: {broken}"


def test_report_plot_says_the_file_it_wrote(results_store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(results_store), "--plot", "p", "-q"]) == 0
    assert (tmp_path / "p.png").is_file() and not (tmp_path / "p").exists()
    assert "plot written to p.png" in capsys.readouterr().err


def test_quiet_demo_says_its_folder_goes_and_hides_the_port_warning(tmp_path):
    """-q silences distributed's "Port 8787 is already in use"; the temporary folder is named."""
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        busy.bind(("127.0.0.1", 8787))
        busy.listen()
    except OSError:  # already in use by someone else: as good
        pass
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pupsnr_dask", "demo", "-q", "--n-workers", "1"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
    finally:
        busy.close()
    assert proc.returncode == 0, proc.stderr
    assert "already in use" not in proc.stderr, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "deleted when the demo ends" in first and "--workdir" in first
    folder = re.search(r" in (\S+) ", first).group(1)
    assert not os.path.exists(folder)


def test_group_help_lists_each_command_by_its_own_first_line():
    """``pupsnr --help`` is printed without importing the commands, from COMMANDS."""
    from pupsnr_dask.cli import COMMANDS, cli

    for name, (_, line) in COMMANDS.items():
        command = cli.get_command(None, name)
        assert command is not None and command.name == name
        assert (command.help or "").splitlines()[0] == line, name


def test_help_and_argument_errors_import_no_heavy_library():
    """--help and an argument error answer before dask, xarray, zarr or distributed load."""
    probe = (
        "import sys\n"
        "from pupsnr_dask.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['report', '--format', 'nope', 'r.zarr']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('dask', 'xarray', 'zarr', 'distributed') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_errors_and_up_to_date_reruns_start_no_cluster(
    sample_dir, images_store, results_store, tmp_path
):
    """No cluster for work that needs none: distributed is not even imported (issue 12)."""
    import shutil

    images, results = tmp_path / "data.zarr", tmp_path / "psnr.zarr"
    new = tmp_path / "new.zarr"
    shutil.copytree(images_store, images)  # a copy: an ingest that was not up to date would
    shutil.copytree(results_store, results)  # append to it, and the session's store is shared
    (tmp_path / "empty").mkdir()
    cases = {
        "bad size": (["ingest", sample_dir, "-o", tmp_path / "x.zarr", "--size", "7"], 2),
        # 22 images of 4096 x 4096 are 1.03 GiB a chunk (were it not refused: 14 such images)
        "chunk too large": (
            [
                "ingest",
                sample_dir,
                "-o",
                tmp_path / "x.zarr",
                "--size",
                "4096",
                "--chunk-size",
                "22",
            ],
            2,
        ),
        "missing SRC": (["ingest", tmp_path / "missing", "-o", tmp_path / "x.zarr"], 2),
        "missing store": (["run", tmp_path / "missing.zarr", "-o", tmp_path / "r.zarr"], 2),
        "not a store": (["run", tmp_path / "empty", "-o", tmp_path / "r.zarr"], 2),
        "results as images": (["run", results, "-o", tmp_path / "r.zarr"], 2),
        "bad scale": (["run", images, "-o", tmp_path / "r.zarr", "--scales", "3"], 2),
        "verify missing": (["verify", tmp_path / "missing.zarr"], 2),
        "ingest up to date": (["ingest", sample_dir, "-o", images, "--chunk-size", "5"], 0),
        # the session's own pair (a results store records where its images store is); a run
        # without --overwrite never rewrites complete results
        "run up to date": (["run", images_store, "-o", results_store], 0),
        "report": (["report", results], 0),
        # checked before the run begins (a fresh RESULTS): not an internal error of distributed
        "scheduler not an address": (["run", images, "-o", new, "--scheduler", "sync"], 2),
        "scheduler without a port": (["run", images, "-o", new, "--scheduler", "tcp://h"], 2),
        "kubernetes and scheduler": (
            ["run", images, "-o", results, "--kubernetes", "img", "--scheduler", "tcp://x:1"],
            2,
        ),
    }
    # One interpreter runs every case in turn (an import costs seconds): distributed must
    # still be absent after each, and each error is one line on standard error.
    probe = (
        "import contextlib, io, json, sys\n"
        "from pupsnr_dask.cli import main\n"
        "for name, argv in json.loads(sys.argv[1]):\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        code = main(argv)\n"
        "    print(json.dumps([name, code, 'distributed' in sys.modules, out.getvalue(),\n"
        "                      err.getvalue()]))\n"
    )
    args = json.dumps(
        [[name, [str(a) for a in [*argv, "-q"]]] for name, (argv, _) in cases.items()]
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    answers = {row[0]: row[1:] for row in map(json.loads, proc.stdout.splitlines())}
    assert list(answers) == list(cases)
    for name, (code, distributed, out, err) in answers.items():
        assert (code, distributed) == (cases[name][1], False), (name, code, out, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1, (name, err)
    assert "up to date" in answers["ingest up to date"][2]
    assert "not the address of a Dask scheduler" in answers["scheduler not an address"][3]


def test_a_type_error_of_ours_is_an_internal_error_with_its_traceback(
    results_store, monkeypatch, capsys
):
    from pupsnr_dask import query
    from pupsnr_dask.store.fs import parse_storage_options

    # a bug: our code handed a value of the wrong kind to our own function
    monkeypatch.setattr(query, "summary_figures", lambda *a, **k: parse_storage_options(42))
    assert main(["report", str(results_store)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError" in err
    assert err.strip().splitlines()[-1].startswith("pupsnr: internal error: TypeError")


def test_our_value_error_inside_a_compute_is_an_internal_error(
    images_store, tmp_path, monkeypatch, capsys
):
    from pupsnr_dask import experiment

    def kernel(*args, **kwargs):  # our own check, failing inside a task: a bug, not the input
        experiment.check_selection(["sepia"], [1], 256)

    monkeypatch.setattr(experiment, "quality_cube_kernel", kernel)
    argv = ["run", str(images_store), "-o", str(tmp_path / "r.zarr"), "-q", "--threads"]
    assert main([*argv, "--n-workers", "1"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "variant must be one of" in err
    assert err.strip().splitlines()[-1].startswith("pupsnr: internal error: ValueError")


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_value_error_of_ours_raised_inside_a_task_is_a_bug(scheduler):
    import dask

    from pupsnr_dask.cli import user_error_message
    from pupsnr_dask.experiment import check_selection

    def raised(call):
        try:
            call()
        except Exception as err:
            return err
        raise AssertionError("nothing raised")

    outside = raised(lambda: check_selection(["sepia"], [1], 256))
    assert user_error_message(outside) == (
        "variant must be one of ('true', 'gray', 'mosaic'), got 'sepia'"
    )  # the input, checked before anything computes: the user's
    task = dask.delayed(check_selection)(["sepia"], [1], 256)
    inside = raised(lambda: task.compute(scheduler=scheduler))
    assert type(inside) is ValueError and user_error_message(inside) is None
