"""Against a real cluster of processes: ``dask scheduler`` and ``dask worker`` on 127.0.0.1.

Every process is started by the test, in its own process group, with its output in a log file,
and killed in ``finally``; every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from clusters import (
    IMAGE_VARS,
    RESULT_VARS,
    RUN_TIMEOUT,
    RecordGraphs,
    assert_same_bits,
    chunk_files,
    free_port,
    kill_group,
    make_certificates,
    process_cluster,
    synthetic_images_store,
    wait_until,
)
from conftest import random_photo, write_image

from pupsnr_dask import build_psnr_cube, schema
from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask import run_experiment as run
from pupsnr_dask.cli import main
from pupsnr_dask.store.zarr_io import open_store

N_IMAGES = 40


@pytest.fixture(scope="module")
def long_src(tmp_path_factory) -> Path:
    """40 generated colour images (PNG and JPEG) and one gray image."""
    root = tmp_path_factory.mktemp("long") / "src"
    rng = np.random.default_rng(11)
    for i in range(N_IMAGES):
        write_image(root / f"{i % 3}" / f"{i:03d}.{'png' if i % 2 else 'jpg'}",
                    random_photo(rng, 48, 40))  # fmt: skip
    write_image(root / "gray.png", random_photo(rng, 48, 40)[..., 0])
    return root


@pytest.fixture(scope="module")
def long_store(long_src) -> Path:
    """The images of ``long_src`` in chunks of 2: 20 tasks of 0.1-0.5 s with --method literal."""
    store = long_src.parent / "data.zarr"
    with dask.config.set(scheduler="threads"):
        ingest(str(long_src), str(store), chunk_size=2, progress=False)
    return store


def test_cli_on_process_cluster_is_bit_identical_to_local_cluster(
    long_src, local_cluster, tmp_path, capsys
):
    """ingest + run with --scheduler on separate processes == the same on a LocalCluster."""
    stores = {}
    with process_cluster(tmp_path / "cluster") as cluster:
        addresses = {"remote": cluster.address, "local": local_cluster.scheduler.address}
        for name, address in addresses.items():
            store, results = tmp_path / f"{name}.zarr", tmp_path / f"{name}-psnr.zarr"
            common = ["--scheduler", address, "-q", "--timeout", "30"]
            argv = ["ingest", str(long_src), "-o", str(store), "--chunk-size", "4", *common]
            assert main([*argv, "--test-count", "5"]) == 0, capsys.readouterr().err
            assert main(["run", str(store), "-o", str(results), *common]) == 0
            stores[name] = store, results
        out = capsys.readouterr().out
        assert out.count(f"{N_IMAGES} colour images stored") == 2
        assert out.count("rejected 1: not colour") == 2 and out.count("PSNR of") == 2
    remote = [xr.open_zarr(p) for p in stores["remote"]]
    local = [xr.open_zarr(p) for p in stores["local"]]
    assert remote[0][schema.IMAGES].chunks[0] == (4,) * (N_IMAGES // 4)
    assert_same_bits(remote[0], local[0], IMAGE_VARS)
    assert remote[0].attrs == local[0].attrs
    assert_same_bits(remote[1], local[1], RESULT_VARS)


def test_run_survives_sigkill_of_a_worker(long_store, tmp_path, capsys):
    """SIGKILL one of two workers mid-run: the run completes, every value as without the kill."""
    results = tmp_path / "psnr.zarr"
    n_chunks = len(xr.open_zarr(long_store)[schema.IMAGES].chunks[0])
    exit_code = []
    with process_cluster(tmp_path / "cluster") as cluster:
        argv = ["run", str(long_store), "-o", str(results), "--method", "literal", "-q"]
        run = threading.Thread(
            target=lambda: exit_code.append(main([*argv, "--scheduler", cluster.address])),
            daemon=True,
        )
        run.start()
        written = wait_until(lambda: chunk_files(results), "the first results chunk")
        victim = cluster.workers[0]
        kill_group(victim)
        run.join(timeout=RUN_TIMEOUT)
        survivor_alive = cluster.workers[1].poll() is None
    assert victim.returncode == -signal.SIGKILL
    assert written < n_chunks, "the run ended before the worker was killed"
    assert exit_code == [0], capsys.readouterr().err
    assert survivor_alive
    assert f"PSNR of {N_IMAGES} images" in capsys.readouterr().out
    got = xr.open_zarr(results)
    with dask.config.set(scheduler="threads"):
        expected = build_psnr_cube(open_store(str(long_store), "images"), method="literal")
        expected = expected.compute()
    assert chunk_files(results) == n_chunks
    assert got[schema.IMAGE].values.tolist() == list(range(N_IMAGES))
    assert_same_bits(got, expected, RESULT_VARS)


def test_scheduler_killed_mid_run_fails_fast_with_one_line(long_store, tmp_path):
    """The scheduler going away during `run`: a clear one-line error and exit 2, no hang."""
    results = tmp_path / "psnr.zarr"
    with process_cluster(tmp_path / "cluster", n_workers=1) as cluster:
        run = subprocess.Popen(
            [
                *(sys.executable, "-m", "pupsnr_dask", "run", str(long_store), "-o", str(results)),
                *("--method", "literal", "--scheduler", cluster.address, "--timeout", "5"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            written = wait_until(lambda: chunk_files(results), "the first results chunk")
            kill_group(cluster.scheduler)
            out, err = run.communicate(timeout=RUN_TIMEOUT)  # a hang fails here
        finally:
            kill_group(run)
    n_chunks = len(xr.open_zarr(long_store)[schema.IMAGES].chunks[0])
    assert written < n_chunks, "the run ended before the scheduler was killed"
    assert run.returncode == 2
    assert "PSNR of" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("pupsnr: error: lost the connection to the Dask scheduler at")
    assert cluster.address in last
    assert "Traceback" not in err


def test_unreachable_scheduler_fails_after_timeout(images_store, tmp_path, capsys):
    """Nothing listening at --scheduler: exit 2 with one line once --timeout has passed."""
    address = f"tcp://127.0.0.1:{free_port()}"
    argv = ["run", str(images_store), "-o", str(tmp_path / "r.zarr"), "--scheduler", address]
    exit_code = []
    run = threading.Thread(
        target=lambda: exit_code.append(main([*argv, "--timeout", "2"])), daemon=True
    )
    run.start()
    run.join(timeout=RUN_TIMEOUT)  # a hang fails below
    assert exit_code == [2]
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(
        f"pupsnr: error: could not reach the Dask scheduler at '{address}' within 2 s"
    )
    assert not (tmp_path / "r.zarr").exists()


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    certs = make_certificates(tmp / "certs", "pupsnr-test")
    with process_cluster(tmp / "cluster", n_workers=1, tls=certs) as cluster:
        yield cluster, certs


def tls_flags(certs: dict[str, str]) -> list[str]:
    return ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cert"], "--tls-key", certs["key"]]


def test_tls_scheduler_with_certificate_options(
    tls_cluster, images_store, results_store, tmp_path, capsys
):
    cluster, certs = tls_cluster
    assert cluster.address.startswith("tls://127.0.0.1:")
    results = tmp_path / "psnr.zarr"
    argv = ["run", str(images_store), "-o", str(results), "--scheduler", cluster.address, "-q"]
    assert main([*argv, *tls_flags(certs)]) == 0, capsys.readouterr().err
    assert_same_bits(xr.open_zarr(results), xr.open_zarr(results_store), RESULT_VARS)


def test_tls_certificates_from_environment(tls_cluster, images_store, tmp_path, monkeypatch):
    cluster, certs = tls_cluster
    monkeypatch.setenv("PUPSNR_SCHEDULER", cluster.address)
    monkeypatch.setenv("PUPSNR_TLS_CA_FILE", certs["ca"])
    monkeypatch.setenv("PUPSNR_TLS_CERT", certs["cert"])
    monkeypatch.setenv("PUPSNR_TLS_KEY", certs["key"])
    results = tmp_path / "psnr.zarr"
    assert main(["run", str(images_store), "-o", str(results), "--scales", "2,4", "-q"]) == 0
    assert xr.open_zarr(results)[schema.SCALE].values.tolist() == [2, 4]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "uses TLS: give tls_ca_file and tls_cert"),
        ("other-ca", "could not reach the Dask scheduler at 'tls://127.0.0.1:"),
        (["--tls-ca-file", "{tmp}/missing.pem", "--tls-cert", "{cert}"], "is not a file"),
    ],
)
def test_tls_scheduler_refuses_bad_or_missing_certificates(
    tls_cluster, images_store, tmp_path, capsys, flags, message
):
    cluster, certs = tls_cluster
    if flags == "other-ca":  # a certificate the cluster's authority did not sign
        flags = tls_flags(make_certificates(tmp_path / "other", "intruder"))
    flags = [f.format(tmp=tmp_path, cert=certs["cert"]) for f in flags]
    argv = ["run", str(images_store), "-o", str(tmp_path / "r.zarr"), "-q", "--timeout", "3"]
    assert main([*argv, "--scheduler", cluster.address, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.zarr").exists()


def test_tls_options_need_a_tls_address(images_store, tmp_path, capsys, monkeypatch):
    certs = make_certificates(tmp_path / "certs", "plain")
    argv = ["run", str(images_store), "-o", str(tmp_path / "r.zarr")]
    assert main([*argv, *tls_flags(certs), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "need a tls:// scheduler address" in capsys.readouterr().err
    assert main([*argv, *tls_flags(certs)]) == 2  # the local cluster does not use them either
    assert "need a tls:// scheduler address" in capsys.readouterr().err
    # The environment's certificates are for tls:// addresses only, not an error elsewhere.
    monkeypatch.setenv("PUPSNR_TLS_CA_FILE", certs["ca"])
    monkeypatch.setenv("PUPSNR_TLS_CERT", certs["cert"])
    address = f"tcp://127.0.0.1:{free_port()}"
    assert main([*argv, "--scheduler", address, "--timeout", "1"]) == 2
    assert "could not reach the Dask scheduler" in capsys.readouterr().err


# --- graph structure ----------------------------------------------------------------------------


def test_run_graph_has_k_tasks_per_chunk_and_none_per_image(tmp_path):
    """Tasks of `run` == k * n_chunks + c, whatever the images per chunk: no per-image tasks.

    Every graph that `experiment.run` computes is recorded as the scheduler receives it (the
    synchronous scheduler here; a distributed client sends the same optimized graph). From 2
    chunks on: with one chunk, graph optimization may fuse a shared task into it.
    """
    counts = {}
    for n_chunks in (2, 4, 8):
        for chunk_size in (3, 5):
            store = synthetic_images_store(
                tmp_path / f"{n_chunks}x{chunk_size}.zarr", n_chunks * chunk_size, chunk_size
            )
            with RecordGraphs() as graphs, dask.config.set(scheduler="sync"):
                run(store, store + ".psnr", progress=False)
            counts[n_chunks, chunk_size] = sum(graphs.tasks, Counter())
    total = {key: sum(by_name.values()) for key, by_name in counts.items()}
    k, rest = divmod(total[4, 3] - total[2, 3], 2)
    c = total[2, 3] - 2 * k
    assert rest == 0 and 1 <= k <= 10, counts[2, 3]
    for (n_chunks, chunk_size), by_name in counts.items():
        assert total[n_chunks, chunk_size] == k * n_chunks + c, (n_chunks, chunk_size, by_name)
        assert by_name == counts[n_chunks, 3]  # more images per chunk, the same graph
