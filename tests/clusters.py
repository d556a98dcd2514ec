"""Helpers for tests against real processes: a Dask cluster of `dask scheduler` and
`dask worker` processes on 127.0.0.1, TLS certificates, bit-for-bit comparisons of stores.

Every process is started in its own process group with its output in a log file, and killed in
``finally``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from dask.callbacks import Callback
from dask.utils import key_split

from pupsnr_dask import schema

STARTUP_TIMEOUT = 90  # seconds; the CI machine is small and shared
RUN_TIMEOUT = 180


@dataclass
class ProcessCluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    tls_args: list[str] = field(default_factory=list)
    logs: Path | None = None


def dask_command() -> list[str]:
    """The `dask` command of this interpreter (the one `dask scheduler` / `dask worker` use)."""
    script = Path(sys.executable).with_name("dask")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dask"]


def _spawn(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process and its children (each process here leads its own group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def wait_until(condition: Callable[[], object], what: str, timeout: float = STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for_workers(address: str, tls_args: list[str], n_workers: int) -> None:
    """Block until the scheduler knows ``n_workers`` workers (bounded)."""
    from distributed import Client

    from pupsnr_dask.cluster import make_security

    security = None
    if tls_args:
        files = dict(zip(("tls_ca_file", "tls_cert", "tls_key"), tls_args[1::2], strict=True))
        security = make_security(address, **files)
    with Client(address, timeout=STARTUP_TIMEOUT, security=security) as client:
        client.wait_for_workers(n_workers, timeout=STARTUP_TIMEOUT)


@contextlib.contextmanager
def process_cluster(
    tmp: Path, n_workers: int = 2, tls: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[ProcessCluster]:
    """`dask scheduler` + `n_workers` x `dask worker --nthreads 1`, all on 127.0.0.1.

    Workers run without a nanny: one process each, which SIGKILL ends for good (a nanny would
    start a new worker). ``cwd``: the workers' working directory (default: this process's).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    tls_args = (
        ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        if tls
        else []
    )
    scheduler_file = tmp / "scheduler.json"
    scheduler = _spawn(
        [
            *dask_command(),
            *("scheduler", "--host", f"{'tls' if tls else 'tcp'}://127.0.0.1"),
            *("--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)),
            *tls_args,
        ],
        tmp / "scheduler.log",
    )
    cluster = ProcessCluster("", scheduler, tls_args=tls_args, logs=tmp)
    try:

        def address() -> str | None:
            assert scheduler.poll() is None, (tmp / "scheduler.log").read_text()
            with contextlib.suppress(OSError, ValueError, KeyError):
                return json.loads(scheduler_file.read_text())["address"]
            return None

        cluster.address = wait_until(address, "the scheduler file")
        for i in range(n_workers):
            cluster.workers.append(
                _spawn(
                    [
                        *dask_command(),
                        *("worker", cluster.address, "--nthreads", "1"),
                        *("--no-nanny", "--no-dashboard", "--name", f"worker-{i}"),
                        *("--local-directory", str(tmp / f"worker-{i}")),
                        *tls_args,
                    ],
                    tmp / f"worker-{i}.log",
                    cwd,
                )
            )
        if n_workers:
            wait_for_workers(cluster.address, tls_args, n_workers)
        yield cluster
    finally:
        for proc in [*cluster.workers, scheduler]:
            kill_group(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunk_files(results: Path, var: str = schema.MSE) -> int:
    """How many chunks of ``var`` are written (Zarr v3 keys: var/c/i/0/0)."""
    folder = results / var / "c"
    return sum(1 for _ in folder.glob("*/0/0")) if folder.is_dir() else 0


def assert_same_bits(a: xr.Dataset, b: xr.Dataset, names: list[str]) -> None:
    for name in names:
        x, y = a[name].values, b[name].values
        assert x.shape == y.shape, name
        if x.dtype.kind in "fiu":
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f"{name} differs"
        else:  # strings: numpy's StringDType or object, depending on how they were read
            assert x.tolist() == y.tolist(), f"{name} differs"


IMAGE_VARS = [schema.IMAGES, schema.IMAGE, *schema.IMAGE_COORDS]
RESULT_VARS = [schema.PSNR, schema.MSE, schema.IMAGE, schema.VARIANT, schema.SCALE,
               schema.RESOLUTION, schema.SOURCE, schema.SPLIT]  # fmt: skip


def make_certificates(folder: Path, name: str) -> dict[str, str]:
    """A certificate authority and one certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, key, signing_key, is_ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        )
        if not is_ca:
            ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(
                x509.SubjectAlternativeName([ip, x509.DNSName("localhost")]), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    host_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    ca = certificate(ca_name, ca_name, ca_key, ca_key, True)
    cert = certificate(host_name, ca_name, key, ca_key, False)
    pem = serialization.Encoding.PEM
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["cert"].write_bytes(cert.public_bytes(pem))
    files["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {k: str(v) for k, v in files.items()}


def synthetic_images_store(path: Path, n_images: int, chunk_size: int, size: int = 32) -> str:
    """An images store of random pixels, written directly (no decoding): graph tests only."""
    rng = np.random.default_rng(n_images)
    n = n_images
    ds = xr.Dataset(
        {schema.IMAGES: (schema.IMAGE_DIMS, rng.integers(0, 256, (n, size, size, 3), np.uint8))},
        coords={
            schema.IMAGE: np.arange(n),
            schema.SOURCE: (schema.IMAGE, np.array([f"{i}.png" for i in range(n)], dtype=object)),
            schema.COLOR_SCORE: (schema.IMAGE, np.zeros(n)),
            schema.SPLIT: (schema.IMAGE, np.array(["train"] * n, dtype=object)),
            schema.ORIGINAL_WIDTH: (schema.IMAGE, np.full(n, size)),
            schema.ORIGINAL_HEIGHT: (schema.IMAGE, np.full(n, size)),
        },
        attrs={schema.KIND_ATTR: "images"},
    )
    encoding = {schema.IMAGES: {"chunks": (chunk_size, size, size, 3)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, encoding=encoding, consolidated=True)
    return str(path)


class RecordGraphs(Callback):
    """Record, for each graph a local dask scheduler runs, its tasks by name prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[Counter[str]] = []

    def _start(self, dsk) -> None:
        self.tasks.append(Counter(key_split(k) for k in dsk))
