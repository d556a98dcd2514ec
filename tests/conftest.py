from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

# CI: enough examples to find something (issue 11); a test too slow for it says so itself
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The real sample photos that installed packages ship, copied into a folder."""
    from pupsnr_dask.samples import write_samples

    root = tmp_path_factory.mktemp("samples")
    write_samples(root)
    return root


@pytest.fixture(scope="session")
def images_store(sample_dir, tmp_path_factory) -> Path:
    """Ingested sample photos (synchronous scheduler), chunk size 5 for uneven chunks."""
    import dask

    from pupsnr_dask import ingest_folder as ingest

    store = tmp_path_factory.mktemp("stores") / "data.zarr"
    with dask.config.set(scheduler="sync"):
        ingest(str(sample_dir), str(store), chunk_size=5, progress=False)
    return store


@pytest.fixture(scope="session")
def results_store(images_store, tmp_path_factory) -> Path:
    import dask

    from pupsnr_dask import run_experiment as run

    results = tmp_path_factory.mktemp("results") / "psnr.zarr"
    with dask.config.set(scheduler="threads"):
        run(str(images_store), str(results), progress=False)
    return results


@pytest.fixture(scope="session")
def local_cluster():
    """A real LocalCluster: scheduler and 2 worker processes on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        with Client(cluster, set_as_default=False) as client:
            yield client


def write_image(path: Path, array: np.ndarray, **save_kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kwargs)
    return path


def random_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour image (not noise): gradients plus a few blobs, uint8 RGB."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        base = 128 + 90 * np.sin(3 * a * yy + 5 * b * xx + c)
        channels.append(base + rng.normal(0, 8, (h, w)))
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def images_dataset(pixels: np.ndarray, chunk: int):
    """An in-memory images dataset (the layout of an images store) over ``pixels``, lazy."""
    import dask.array as da
    import xarray as xr

    n, size = len(pixels), pixels.shape[1]
    return xr.Dataset(
        {
            "images": (
                ("image", "y", "x", "channel"),
                da.from_array(pixels, chunks=(chunk, -1, -1, -1)),
            )
        },
        coords={
            "image": np.arange(n),
            "source": ("image", [f"{i}.png" for i in range(n)]),
            "color_score": ("image", np.zeros(n)),
            "split": ("image", ["train"] * n),
            "original_width": ("image", np.full(n, size)),
            "original_height": ("image", np.full(n, size)),
        },
        attrs={"pupsnr_kind": "images"},
    )
