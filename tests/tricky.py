"""Stores whose sources hold characters that markup gives a meaning: $, <, &, quotes."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
from conftest import random_photo, write_image

import pupsnr_dask as pp

#: ``$`` pairs are mathtext in matplotlib, ``<&"'`` are markup in HTML.
DOLLAR = "a$\\foo$b.png"
MARKUP = "<i>&amp;\"q'.png"
SOURCES = (DOLLAR, MARKUP, "plain.png")


def tricky_stores(root: Path) -> tuple[Path, Path]:
    """An images store and a results store of three colour photos named :data:`SOURCES`."""
    rng = np.random.default_rng(7)
    for name in SOURCES:
        write_image(root / "src" / name, random_photo(rng, 64, 80))
    images, results = root / "data.zarr", root / "psnr.zarr"
    with dask.config.set(scheduler="sync"):
        pp.ingest(str(root / "src"), str(images), size=32, progress=False)
        pp.run(str(images), str(results), scales=(1, 2, 4), progress=False)
    return images, results
