"""Object storage: SRC, STORE and RESULTS as ``s3://`` URLs on a real S3-compatible server.

The server is moto's server mode (HTTP on 127.0.0.1, a random port) started by a fixture; the
client side is the real s3fs/aiobotocore stack, in this process and in the worker processes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import dask
import pytest
import xarray as xr
from clusters import IMAGE_VARS, RESULT_VARS, assert_same_bits
from dask.callbacks import Callback

import pupsnr_dask
from pupsnr_dask import experiment, query, schema
from pupsnr_dask import ingest_folder as ingest
from pupsnr_dask.cli import main
from pupsnr_dask.report.summary import format_summary

BUCKET = "pupsnr-test"
# Credentials the fixture puts in the environment, and others given as storage options; moto
# accepts any. None of them may end up in a store, in the output or in a task's repr.
ENV_KEY_ID, ENV_SECRET = "AKIAPUPSNRENVKEY0001", "env-secret-5b9e0f1c2d"
OPT_KEY_ID, OPT_SECRET = "AKIAPUPSNROPTKEY0002", "opt-secret-7a3c9d4e1f"
SECRETS = (ENV_KEY_ID, ENV_SECRET, OPT_KEY_ID, OPT_SECRET)
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN",
           "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")  # fmt: skip


@dataclass
class S3:
    endpoint: str
    fs: object  # s3fs.S3FileSystem

    def options(self, **extra: str) -> dict[str, str]:
        return {"endpoint_url": self.endpoint, **extra}


@pytest.fixture(scope="module")
def s3(sample_dir, tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with the sample photos under s3://pupsnr-test/src/."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as env:
        for name in AWS_ENV:
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", ENV_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", str(home / "config"))  # no user configuration
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            fs = S3FileSystem(endpoint_url=f"http://{host}:{port}", use_listings_cache=False)
            fs.mkdir(BUCKET)
            fs.put(f"{sample_dir}/", f"{BUCKET}/src/", recursive=True)
            yield S3(f"http://{host}:{port}", fs)
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3_images(s3):
    """The sample photos ingested into s3:// with the library (threads), chunks of 5."""
    store = f"s3://{BUCKET}/fixture/data.zarr"
    with dask.config.set(scheduler="threads"):
        ingest(f"s3://{BUCKET}/src", store, chunk_size=5, storage_options=s3.options(),
               progress=False)  # fmt: skip
    return store


def open_s3(s3: S3, url: str) -> xr.Dataset:
    return xr.open_zarr(url, storage_options=s3.options())


def assert_no_secret_stored(s3: S3) -> None:
    """No credential in any object written under the bucket (the stores, their attributes)."""
    written = [p for p in s3.fs.find(BUCKET) if not p.startswith(f"{BUCKET}/src/")]
    assert any(p.endswith("zarr.json") for p in written)
    for path in written:
        content = s3.fs.cat_file(path)
        for secret in SECRETS:
            assert secret.encode() not in content, f"{secret} written to {path}"


def test_cli_ingest_run_report_on_s3_match_local_bit_for_bit(
    s3, local_cluster, images_store, results_store, capfd
):
    """s3:// SRC, STORE and RESULTS through the CLI on worker processes, options from the CLI.

    The workers of ``local_cluster`` know neither the endpoint nor these credentials: they get
    them with the tasks, as storage options.
    """
    options = json.dumps(s3.options(key=OPT_KEY_ID, secret=OPT_SECRET))
    common = ["--storage-options", options, "--scheduler", local_cluster.scheduler.address, "-q"]
    store, results = f"s3://{BUCKET}/cli/data.zarr", f"s3://{BUCKET}/cli/psnr.zarr"
    src = f"s3://{BUCKET}/src"
    assert main(["ingest", src, "-o", store, "--chunk-size", "5", *common]) == 0
    assert main(["run", store, "-o", results, *common]) == 0
    assert main(["report", results, "--storage-options", options]) == 0
    out, err = capfd.readouterr()
    local = query.summarize(xr.open_zarr(results_store))
    assert format_summary(local, "text") in out
    images, cube = open_s3(s3, store), open_s3(s3, results)
    expected_images = xr.open_zarr(images_store)
    assert_same_bits(images, expected_images, IMAGE_VARS)
    assert_same_bits(cube, xr.open_zarr(results_store), RESULT_VARS)
    assert images.attrs["src"] == src
    assert images.attrs[schema.REJECTED_ATTR] == expected_images.attrs[schema.REJECTED_ATTR]
    for secret in SECRETS:
        assert secret not in out + err
    assert_no_secret_stored(s3)
    assert not s3.fs.exists(f"{BUCKET}/cli/data.zarr.partial")


def test_endpoint_and_credentials_from_aws_environment(
    s3, s3_images, results_store, tmp_path, monkeypatch, capfd
):
    """No storage options: s3fs takes AWS_ENDPOINT_URL and the credentials from the environment.

    A new LocalCluster's workers inherit the environment.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    results = f"s3://{BUCKET}/env/psnr.zarr"
    assert main(["run", s3_images, "-o", results, "--n-workers", "1", "-q"]) == 0
    assert main(["report", results, "--format", "json"]) == 0
    out, err = capfd.readouterr()
    rows = json.loads(out[out.index("{") :])["rows"]
    assert len(rows) == 18
    assert_same_bits(open_s3(s3, results), xr.open_zarr(results_store), RESULT_VARS)
    for secret in SECRETS:
        assert secret not in out + err
    assert_no_secret_stored(s3)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the options from $PUPSNR_STORAGE_OPTIONS instead
    monkeypatch.setenv("PUPSNR_STORAGE_OPTIONS", json.dumps(s3.options()))
    assert main(["report", results, "--format", "csv"]) == 0
    assert len(capfd.readouterr().out.split()) == 19  # header + 3 variants x 6 scales


def test_storage_options_hidden_from_every_task(s3, tmp_path):
    """The repr of every task argument (what a worker logs for a failed task) hides credentials."""
    seen: list[tuple[str, list[str]]] = []

    class Record(Callback):
        def _pretask(self, key, dsk, state):
            task = dsk[key]
            args = [*getattr(task, "args", ()), *getattr(task, "kwargs", {}).values()]
            seen.append((str(key), [repr(a) for a in args]))

    options = s3.options(key=OPT_KEY_ID, secret=OPT_SECRET)
    store, results = f"s3://{BUCKET}/hidden/data.zarr", f"s3://{BUCKET}/hidden/psnr.zarr"
    with Record(), dask.config.set(scheduler="sync"):
        ingest(f"s3://{BUCKET}/src/sklearn", store, storage_options=options, progress=False)
        experiment.run_experiment(
            store, results, scales=(2,), storage_options=options, progress=False
        )
    ingest_args = [args for key, args in seen if key.startswith("pupsnr-ingest")]
    assert ingest_args, [key for key, _ in seen]
    for args in ingest_args:  # the options travel with the task, credentials masked
        assert any(s3.endpoint in a and "'secret': '***'" in a for a in args), args
    for key, args in seen:
        for secret in SECRETS:
            assert not any(secret in a for a in [key, *args]), key
    assert open_s3(s3, results)[schema.PSNR].shape == (2, 3, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"secret": "hunter2", ', "not valid JSON"),
        ('["hunter2"]', "must be a JSON object, got a JSON list"),
    ],
)
def test_bad_storage_options_are_one_line_without_the_value(value, message, capsys):
    assert main(["report", "s3://bucket/psnr.zarr", "--storage-options", value]) == 2
    err = capsys.readouterr().err
    assert message in err and "hunter2" not in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- pp.open_images / pp.open_results take storage_options= like every other opener --------


@pytest.fixture(scope="module")
def s3_copies(s3, images_store, results_store):
    """Copies of the sample images and results stores, for the openers."""
    s3.fs.put(f"{images_store}/", f"{BUCKET}/open/data.zarr/", recursive=True)
    s3.fs.put(f"{results_store}/", f"{BUCKET}/open/psnr.zarr/", recursive=True)
    return f"s3://{BUCKET}/open/data.zarr", f"s3://{BUCKET}/open/psnr.zarr"


def test_openers_take_a_storage_options_dict(s3, s3_copies, images_store, results_store):
    images, results = s3_copies
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ds = pupsnr_dask.open_images(images, storage_options=s3.options())
        cube = pupsnr_dask.open_results(results, storage_options=s3.options())
    xr.testing.assert_identical(ds.load(), xr.open_zarr(images_store).load())
    xr.testing.assert_identical(cube.load(), xr.open_zarr(results_store).load())


def test_openers_keyword_options_still_work_with_a_deprecation_warning(s3, s3_copies):
    images, results = s3_copies
    with pytest.warns(DeprecationWarning, match="storage_options="):
        ds = pupsnr_dask.open_images(images, endpoint_url=s3.endpoint)
    with pytest.warns(DeprecationWarning, match="storage_options="):
        cube = pupsnr_dask.open_results(results, endpoint_url=s3.endpoint)
    assert ds.sizes["image"] == cube.sizes["image"]
    with pytest.raises(TypeError, match="not both"):
        pupsnr_dask.open_results(results, storage_options=s3.options(), endpoint_url=s3.endpoint)


@pytest.mark.parametrize("name", ["photos.zip", "photos.TGZ"])
def test_an_archive_in_a_bucket_is_ingested_with_the_storage_options(
    s3, images_store, tmp_path, name
):
    """SRC = s3://.../photos.zip or .TGZ: the options reach S3 (not the archive's filesystem),
    and a ``.tgz`` is read as gzip (fsspec infers neither); the store equals the folder's."""
    import shutil

    sample = xr.open_zarr(images_store).attrs["src"]
    fmt = "zip" if name.endswith(".zip") else "gztar"
    made = shutil.make_archive(str(tmp_path / "photos"), fmt, root_dir=sample)
    url = f"s3://{BUCKET}/archives/{name}"
    s3.fs.put(made, url)
    store = f"s3://{BUCKET}/archives/{name}.zarr"
    with dask.config.set(scheduler="threads"):
        ingest(url, store, chunk_size=5, storage_options=s3.options(), progress=False)
    images = open_s3(s3, store)
    assert images.attrs["src"] == url
    assert_same_bits(images, xr.open_zarr(images_store), IMAGE_VARS)
