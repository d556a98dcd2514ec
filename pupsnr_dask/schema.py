"""The storage contract: dimension, variable, coordinate and attribute names; open and validate.

Two kinds of store are written by pupsnr_dask, both Zarr groups that ``xr.open_zarr`` opens:

``images`` store (written by :func:`pupsnr_dask.ingest.ingest_folder`)::

    images   (image, y, x, channel)  uint8     img_true, chunked along ``image`` only
    image    (image,)                int64     stable index of each image
    source   (image,)                str       path relative to SRC, "/" separators
    color_score (image,)             float64   mean of the 3x3 RGB correlation matrix
    split    (image,)                str       "train" or "test"
    original_width, original_height (image,)   int64

``psnr`` store (written by :func:`pupsnr_dask.experiment.run_experiment`)::

    psnr     (image, variant, scale) float64   dB, +inf for identical images
    mse      (image, variant, scale) float64   mean over H x W x C against img_true
    variant  (variant,)              str       "true", "gray", "mosaic", ...
    scale    (scale,)                int64     1, 2, 4, 8, 16, 32
    resolution (scale,)              int64     size // scale
    source, split (image,)                     carried over from the images store
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pupsnr_dask import defaults

if TYPE_CHECKING:  # xarray is imported by whoever opens a store: not for these names
    import xarray as xr

IMAGE = "image"


Y = "y"


X = "x"


CHANNEL = "channel"


VARIANT = "variant"


SCALE = "scale"


IMAGE_DIMS = (IMAGE, Y, X, CHANNEL)


CUBE_DIMS = (IMAGE, VARIANT, SCALE)


IMAGES = "images"


PSNR = "psnr"


MSE = "mse"


SOURCE = "source"


COLOR_SCORE = "color_score"


SPLIT = "split"


ORIGINAL_WIDTH = "original_width"


ORIGINAL_HEIGHT = "original_height"


RESOLUTION = "resolution"


IMAGE_COORDS = (SOURCE, COLOR_SCORE, SPLIT, ORIGINAL_WIDTH, ORIGINAL_HEIGHT)


SPLITS = defaults.SPLITS
#: The variants a results store may hold (their kernels: :data:`pupsnr_dask.experiment.VARIANTS`).
VARIANT_NAMES = ("true", "gray", "mosaic")
#: How a results store's MSE was computed (its ``method`` attribute).
METHODS = defaults.METHODS


#: Images per chunk along ``image`` (and per ingest task); 32 measured best (benchmarks/RESULTS.md).
DEFAULT_CHUNK_SIZE = defaults.DEFAULT_CHUNK_SIZE


KIND_ATTR = "pupsnr_kind"


VERSION_ATTR = "pupsnr_version"


REJECTED_ATTR = "rejected"


#: Attributes whose value is a list or a mapping, stored as JSON text (:func:`encode_attrs`).
JSON_ATTRS = (
    REJECTED_ATTR,
    "images_store_attrs",
    "variant_definitions",
    "variant_parameters",
    "metrics",
    "metric_definitions",
    "model_outputs",
)


StoreKind = Literal["images", "psnr"]


# -- CF-style attributes of every variable and coordinate --------------------------------------
#: ``units``, ``long_name`` and ``description`` of each variable and coordinate of both kinds
#: of store, written by :func:`pupsnr_dask.store.zarr_io.create_store` (CF conventions 1.11,
#: section 3). Only ``psnr`` has units: the other quantities are counts, labels, ratios or
#: squared 0-255 values, which CF writes without ``units``; ``resolution``, ``original_width``
#: and ``original_height`` are numbers of pixels, said in ``long_name`` (UDUNITS, the units
#: CF allows, has no pixel).
VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    IMAGES: {
        "long_name": "img_true: RGB image resized with LANCZOS",
        "description": "uint8 values 0-255, channels R, G, B; the image aspect ratio is not kept",
    },
    IMAGE: {
        "long_name": "image index",
        "description": "stable index of each image, kept when a store is extended",
    },
    SOURCE: {
        "long_name": "source file",
        "description": "path of the image file relative to the ingested folder, / separators",
    },
    COLOR_SCORE: {
        "long_name": "colour score",
        "description": "mean of the 3x3 correlation matrix of the original R, G, B values; "
        "colour when below the store's threshold attribute",
    },
    SPLIT: {"long_name": "data split", "description": "'train' or 'test'"},
    ORIGINAL_WIDTH: {"long_name": "original width in pixels"},
    ORIGINAL_HEIGHT: {"long_name": "original height in pixels"},
    PSNR: {
        "units": "dB",
        "long_name": "PSNR of the PU-transformed variant against img_true",
        "description": "10*log10(255**2 / mse), per image; +inf for identical images",
    },
    MSE: {
        "long_name": "mean squared error against img_true",
        "description": "mean over all pixels and channels of (PU(variant, scale) - img_true)**2 "
        "on the 0-255 scale, float64; no units (squared 0-255 pixel values)",
    },
    VARIANT: {
        "long_name": "variant",
        "description": "the input a U-Net would see: 'true' (img_true), 'gray', 'mosaic', ...",
    },
    SCALE: {
        "long_name": "PU scale",
        "description": "side of the average-pooled blocks; the PU transform at scale s keeps "
        "size/s x size/s pixels (U-Net depth log2(s))",
    },
    RESOLUTION: {
        "long_name": "resolution in pixels",
        "description": "size // scale: the side of the pooled image",
    },
}


def encode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with every list, tuple or mapping value as JSON text.

    NetCDF (and so ``ds.to_netcdf``) carries only strings, numbers and flat arrays of numbers
    as attributes; JSON text carries anything and :func:`json_attr` reads it back.

    Examples
    --------
    >>> encode_attrs({"size": 256, "rejected": [{"source": "a.png", "reason": "grey"}]})
    {'size': 256, 'rejected': '[{"source": "a.png", "reason": "grey"}]'}
    """
    return {
        k: json.dumps(v) if isinstance(v, list | tuple | Mapping) else v for k, v in attrs.items()
    }


def json_attr(attrs: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """The value of the JSON attribute ``name``: decoded, or as is when it is a list or dict.

    Older stores keep these attributes as lists and mappings (not JSON text); both
    forms are read. ``default`` when the attribute is absent; :class:`StoreError` when it is
    a string that is not JSON.

    Examples
    --------
    >>> json_attr({"rejected": '[{"source": "a.png", "reason": "grey"}]'}, "rejected")
    [{'source': 'a.png', 'reason': 'grey'}]
    >>> json_attr({"rejected": [{"source": "a.png", "reason": "grey"}]}, "rejected")
    [{'source': 'a.png', 'reason': 'grey'}]
    >>> json_attr({}, "rejected", [])
    []
    """
    if name not in attrs:
        return default
    value = attrs[name]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: hostile nesting
            raise StoreError(f"attribute {name!r} is not valid JSON text") from None
    return value


def _decoded(value: Any) -> Any:
    """A JSON attribute's value decoded, or None when it is a string that is not JSON."""
    try:
        return json_attr({"v": value}, "v")
    except StoreError:
        return None


def _rejected_ok(value: Any) -> bool:
    value = _decoded(value)
    return isinstance(value, list) and all(
        isinstance(r, dict)
        and isinstance(r.get("source"), str)
        and isinstance(r.get("reason"), str)
        for r in value
    )


class StoreError(ValueError):
    """A store exists but is not a valid pupsnr store of the expected kind."""


def validate(ds: xr.Dataset, kind: StoreKind, *, name: str = "dataset") -> None:
    """Raise :class:`StoreError` unless ``ds`` follows the layout of a ``kind`` store.

    The layout (:func:`check_layout`), then the attributes and labels that pupsnr reads
    (:func:`label_defects`).
    """
    check_layout(ds, kind, name=name)
    bad = label_defects(ds, kind)
    if bad:
        raise StoreError(f"{name!r} is damaged: {bad[0]}; `pupsnr verify` lists every defect")


def check_layout(ds: xr.Dataset, kind: StoreKind, *, name: str = "dataset") -> None:
    """Raise :class:`StoreError` unless ``ds`` has the variables, dims and dtypes of ``kind``."""
    found = ds.attrs.get(KIND_ATTR)
    if found != kind:
        what = f"a pupsnr {found!r} store" if found else "not a pupsnr store"
        raise StoreError(f"{name!r} is {what}; expected a pupsnr {kind!r} store")
    if kind == "images":
        _check_var(ds, IMAGES, IMAGE_DIMS, "uint8", name)
        if ds[IMAGES].sizes[CHANNEL] != 3:
            raise StoreError(f"{name!r}: {IMAGES} must have 3 channels")
        if ds[IMAGES].sizes[Y] != ds[IMAGES].sizes[X]:
            raise StoreError(f"{name!r}: {IMAGES} must be square")
        coords: tuple[str, ...] = IMAGE_COORDS
    else:
        _check_var(ds, PSNR, CUBE_DIMS, "float64", name)
        _check_var(ds, MSE, CUBE_DIMS, "float64", name)
        coords = (VARIANT, SCALE, RESOLUTION, SOURCE, SPLIT)
    missing = [c for c in coords if c not in ds.coords]
    if missing:
        raise StoreError(f"{name!r} lacks coordinates {missing}")


#: Attributes that pupsnr reads, by kind of store: name -> (what it must be, test).
_ATTR_TYPES: dict[str, dict[str, tuple[str, Any]]] = {
    "images": {
        "size": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "n_files": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "test_count": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "chunk_size": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "threshold": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
        "src": ("a string", lambda v: isinstance(v, str)),
        REJECTED_ATTR: (
            "a list of objects with strings 'source' and 'reason' (as JSON text)",
            _rejected_ok,
        ),
    },
    "psnr": {
        "images_store": ("a string", lambda v: isinstance(v, str)),
        "images_store_attrs": (
            "an object (as JSON text)",
            lambda v: isinstance(_decoded(v), dict),
        ),
        "method": ("a string", lambda v: isinstance(v, str)),
        "size": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    },
}


def label_defects(ds: xr.Dataset, kind: StoreKind) -> list[str]:
    """Attributes of the wrong type, and labels pupsnr does not know, of a ``kind`` dataset.

    Reads only attributes and the small index coordinates (loaded when the store is opened).
    A store passing :func:`check_layout` is expected.

    Examples
    --------
    >>> import xarray as xr
    >>> label_defects(xr.Dataset(attrs={"size": "32", "rejected": []}), "images")
    ["attribute 'size' must be an integer; got a str"]
    """
    out = [
        f"attribute {attr!r} must be {what}; got a {type(ds.attrs[attr]).__name__}"
        for attr, (what, ok) in _ATTR_TYPES[kind].items()
        if attr in ds.attrs and not ok(ds.attrs[attr])
    ]
    if kind == "psnr":
        method = ds.attrs.get("method")
        if isinstance(method, str) and method not in METHODS:
            out.append(f"unknown method {method!r}; expected one of {METHODS}")
        unknown = unknown_variants(ds)
        if unknown:
            out.append(f"unknown variant {unknown[0]!r}; expected some of {VARIANT_NAMES}")
        scales = ds[SCALE].values
        if not np.issubdtype(scales.dtype, np.integer) or (scales < 1).any():
            out.append(f"scales must be positive integers, got {scales.tolist()}")
    return out


#: The families of the variants a run resolves besides :data:`VARIANT_NAMES`
#: (:mod:`pupsnr_dask.registry`), and how their labels are written.
TASK_VARIANT_FAMILIES = ("sr", "jpeg", "noise", "blur", "plugin", "entry_point")
_TASK_VARIANT_LABEL = re.compile(r"[A-Za-z_][\w.:-]*")


def unknown_variants(ds: xr.Dataset) -> list[str]:
    """The variant labels of a results dataset that are neither built in nor recorded.

    A label is known when it is one of :data:`VARIANT_NAMES`, or when the
    ``variant_parameters`` attribute (one JSON object a variant, in the order of the
    coordinate) records it as of a task family (:data:`TASK_VARIANT_FAMILIES`) and it is
    written as a name (letters, digits, ``_ . : -``).
    """
    labels = [str(v) for v in ds[VARIANT].values]
    recorded = json_attr(ds.attrs, "variant_parameters")
    families: list[Any] = [None] * len(labels)
    if isinstance(recorded, list) and len(recorded) == len(labels):
        for k, text in enumerate(recorded):
            try:
                doc = json.loads(text) if isinstance(text, str) else None
            except ValueError:
                doc = None
            families[k] = doc.get("family") if isinstance(doc, dict) else None
    return [
        label
        for label, family in zip(labels, families, strict=True)
        if label not in VARIANT_NAMES
        and not (family in TASK_VARIANT_FAMILIES and _TASK_VARIANT_LABEL.fullmatch(label))
    ]


def _check_var(ds: xr.Dataset, var: str, dims: tuple[str, ...], dtype: str, name: str) -> None:
    if var not in ds.data_vars:
        raise StoreError(f"{name!r} has no variable {var!r}")
    if ds[var].dims != dims:
        raise StoreError(f"{name!r}: {var} has dims {ds[var].dims}, expected {dims}")
    if ds[var].dtype != dtype:
        raise StoreError(f"{name!r}: {var} has dtype {ds[var].dtype}, expected {dtype}")
