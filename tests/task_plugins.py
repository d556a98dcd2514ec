"""Variant plug-ins for the tests, in an importable module.

Dask workers import this module by name when they unpickle a task that uses one of these
functions: a test cluster's workers need ``tests/`` on their ``PYTHONPATH``
(``test_task_experiment.py`` sets it before starting them).
"""

from __future__ import annotations

import numpy as np


def invert(images: np.ndarray) -> np.ndarray:
    """255 - img_true: the colour negative (a made-up input for the tests)."""
    return 255 - images


def wrong_shape(images: np.ndarray) -> np.ndarray:
    """Every second row only: the wrong shape."""
    return np.ascontiguousarray(images[:, ::2])


def wrong_dtype(images: np.ndarray) -> np.ndarray:
    """float32 instead of uint8."""
    return images.astype(np.float32)


def explode(images: np.ndarray) -> np.ndarray:
    """Raises on every call."""
    raise RuntimeError("the model file is missing")


def odd_batches(images: np.ndarray) -> np.ndarray:
    """img_true, but raises on a batch of an odd number of images (after the probe passed)."""
    if len(images) % 2:
        raise ValueError("odd batch")
    return images


def counted(images: np.ndarray) -> np.ndarray:
    """img_true; each call appends its batch size to the file ``$PUPSNR_TEST_CALLS`` names."""
    import os

    with open(os.environ["PUPSNR_TEST_CALLS"], "a") as fp:
        fp.write(f"{len(images)}\n")
    return images
