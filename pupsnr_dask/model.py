"""Run an ONNX image-to-image model on the images, on the Dask workers.

Three layers, like the transforms:

1. :func:`inspect_model` reads the ONNX graph with onnxruntime (the input's and output's shapes,
   element types and metadata) and returns a :class:`ModelSpec`: how images are fed to the model
   and how its outputs are read back. What the graph does not say must be given.
2. :func:`run_model_kernel`, the NumPy kernel: uint8 images in, the model's outputs rounded to
   uint8 out (:func:`encode_input`, the model, :func:`decode_output`).
3. :func:`predict`, the lazy wrapper: one task per chunk of images, which builds the input
   variant exactly as :func:`pupsnr_dask.experiment.run_experiment` does (the kernel of
   :func:`pupsnr_dask.registry.resolve_variant`), then runs the model.

Ranges, by name (``input_range`` and ``output_range``)::

    "unit"    float in [0, 1]     pixel x  <->  x / 255
    "signed"  float in [-1, 1]    pixel x  <->  x / 127.5 - 1
    "uint8"   [0, 255]            pixel x  <->  x (a uint8 tensor, or a float one holding 0-255)

Inputs are computed in float64 from the uint8 pixel and rounded once to the input's float type
(a table of 256 values). Outputs are rounded to uint8 the way an image file stores a float
image: clip to the range, scale, round half to even, in the output's own float type (float32
for a float32 model; float16 is read as float32)::

    "unit"    np.rint(np.clip(y, 0, 1) * 255)
    "signed"  np.rint((np.clip(y, -1, 1) + 1) * 127.5)
    "uint8"   np.rint(np.clip(y, 0, 255))          (a uint8 output is taken as it is)

NaN becomes 0. An image encoded and decoded in the same range comes back unchanged. Scaling in
the output's type matters at ties: a float32 output holding ``m / 255`` for a mean ``m = k + 0.5``
gives exactly ``k + 0.5`` again in float32 (checked for every mean of 64 uint8 values), which
rounds to even as ``np.rint(m)`` does; scaled in float64 it would be ``k + 0.5 +- 1e-6``.

One onnxruntime session per process (so per Dask worker process) and model: created on first
use, kept in a module-level cache keyed by the model's SHA-256, the providers and the thread
count, and reused by every later task; tasks carry the :class:`ModelSpec` (the model's path or
bytes), never a session. :func:`session_count` tells how many this process has created.
A session runs sequentially with ``intra_op_threads`` threads (1 by default: a Dask worker
thread is one core) and deterministic compute; on CPU its outputs are bit-identical whatever
the chunking (tested for chunks of 1, 3 and 5 images on three schedulers).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dask.array as da
import numpy as np
from dask.base import tokenize

from pupsnr_dask.defaults import DEFAULT_PROVIDERS, DEFAULT_SIZE, MODEL_LAYOUTS, MODEL_RANGES
from pupsnr_dask.registry import VariantSpec, resolve_variant

Layout = Literal["NCHW", "NHWC"]
Range = Literal["unit", "signed", "uint8"]
Kernel = Callable[[np.ndarray], np.ndarray]

LAYOUTS: tuple[str, ...] = MODEL_LAYOUTS
RANGES: tuple[str, ...] = MODEL_RANGES
#: What each range means, for messages and help texts.
RANGE_MEANINGS = {"unit": "float [0, 1]", "signed": "float [-1, 1]", "uint8": "[0, 255]"}
#: ONNX ``metadata_props`` keys a model may declare its conventions with.
METADATA_KEYS = {
    "layout": "pupsnr.layout",
    "input_range": "pupsnr.input_range",
    "output_range": "pupsnr.output_range",
}
#: The option (command line / keyword) that sets each convention, for error messages.
OPTIONS = {
    "layout": "--layout (layout=)",
    "input_range": "--input-range (input_range=)",
    "output_range": "--output-range (output_range=)",
}
INSTALL_HINT = 'pip install "pupsnr-dask[model]"'

_FLOAT_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
}
_ELEMENT_TYPES: dict[str, np.dtype[Any]] = {**_FLOAT_TYPES, "tensor(uint8)": np.dtype(np.uint8)}


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or an ImportError with the install hint."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"running a model needs onnxruntime: {INSTALL_HINT}") from err
    return onnxruntime


@dataclass(frozen=True)
class ModelSpec:
    """How to run one ONNX model on images: what :func:`inspect_model` found or was told.

    Attributes
    ----------
    model : str or bytes
        Path of the ``.onnx`` file (absolute; every worker must see it), or its bytes. Bytes
        travel with every task to the workers: for a large model, give a path they all see.
    sha256 : str
        Hex SHA-256 of the model's bytes: identifies the model (cache, task names); a file
        that no longer matches it is refused.
    layout : {"NCHW", "NHWC"}
        Layout of the model's input and output.
    input_range, output_range : {"unit", "signed", "uint8"}
        Encoding of the input and output values (see the module docstring).
    input_name, output_name : str
        The graph's input, and the output that is read (its first).
    size : int
        Image side in pixels, the images' and the output's.
    providers : tuple of str
        onnxruntime execution providers, in order of preference; a worker uses those it has.
    batch : int or None
        The model's fixed batch size (a static first input dimension), None when any; a chunk
        is then run in batches of that size, the last padded with zero images.
    intra_op_threads : int
        Threads of each onnxruntime session (1: one Dask worker thread, one core).
    """

    model: str | bytes = field(repr=False)
    sha256: str
    layout: Layout
    input_range: Range
    output_range: Range
    input_name: str
    output_name: str
    size: int = DEFAULT_SIZE
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    batch: int | None = None
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.model, str | bytes):
            raise TypeError(f"model must be a path (str) or bytes, got {type(self.model).__name__}")
        _check_choice("layout", self.layout, LAYOUTS)
        _check_choice("input_range", self.input_range, RANGES)
        _check_choice("output_range", self.output_range, RANGES)
        _check_positive("size", self.size)
        _check_positive("intra_op_threads", self.intra_op_threads)
        if self.batch is not None:
            _check_positive("batch", self.batch)
        check_providers(self.providers)

    @property
    def source(self) -> str:
        """The model's path, or ``<N bytes>``, for messages."""
        return self.model if isinstance(self.model, str) else f"<{len(self.model)} bytes>"

    def token(self) -> str:
        """Deterministic token of what determines the outputs: not where the file is."""
        return tokenize(
            self.sha256,
            self.layout,
            self.input_range,
            self.output_range,
            self.input_name,
            self.output_name,
            self.size,
            self.providers,
            self.batch,
            self.intra_op_threads,
        )


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_providers(providers: Sequence[str]) -> tuple[str, ...]:
    """Validate onnxruntime execution provider names (not whether this machine has them).

    Workers may have providers this process has not (a GPU pool): only names are checked here.
    """
    if isinstance(providers, str) or not providers:
        raise ValueError(
            f"providers must be a non-empty sequence of names, got {providers!r} "
            "(e.g. ('CUDAExecutionProvider', 'CPUExecutionProvider'))"
        )
    known = tuple(import_onnxruntime().get_all_providers())
    for p in providers:
        if p not in known:
            raise ValueError(f"providers must be onnxruntime provider names {known}, got {p!r}")
    return tuple(providers)


# --- sessions: one per process and model ----------------------------------------------------------

_SESSIONS: dict[tuple[str, tuple[str, ...], int], Any] = {}
_SESSIONS_LOCK = threading.Lock()
_SESSIONS_PID = os.getpid()
_SESSIONS_CREATED = 0


def session_count() -> int:
    """How many onnxruntime sessions this process has created (see :func:`get_session`)."""
    return _SESSIONS_CREATED


def _load_bytes(model: str | bytes) -> bytes:
    if isinstance(model, bytes):
        return model
    try:
        with open(model, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"model file {model!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"model {model!r} is a directory, not an .onnx file") from None


def _new_session(data: bytes, providers: tuple[str, ...], threads: int, source: str) -> Any:
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    usable = [p for p in providers if p in available]
    if not usable:
        raise ValueError(
            f"none of the providers {providers} is available to onnxruntime on this machine "
            f"(available: {tuple(available)})"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    try:
        return ort.InferenceSession(data, sess_options=options, providers=usable)
    except Exception as err:  # onnxruntime raises its own exception types
        raise ValueError(f"onnxruntime cannot load the model {source}: {_first_line(err)}") from err


def _cached_session(
    sha256: str, providers: tuple[str, ...], threads: int, load: Callable[[], bytes], source: str
) -> Any:
    global _SESSIONS_CREATED, _SESSIONS_PID
    key = (sha256, providers, threads)
    with _SESSIONS_LOCK:
        if _SESSIONS_PID != os.getpid():  # a forked child: its parent's sessions are not its own
            _SESSIONS.clear()
            _SESSIONS_PID, _SESSIONS_CREATED = os.getpid(), 0
        session = _SESSIONS.get(key)
        if session is None:
            session = _new_session(load(), providers, threads, source)
            _SESSIONS[key] = session
            _SESSIONS_CREATED += 1
    return session


def get_session(spec: ModelSpec) -> Any:
    """The onnxruntime session of this process for ``spec``: created once, then reused.

    The model is read (from its path, or its bytes) only when the session is created, and
    refused when its SHA-256 is no longer ``spec.sha256``.
    """

    def load() -> bytes:
        data = _load_bytes(spec.model)
        if hashlib.sha256(data).hexdigest() != spec.sha256:
            raise ValueError(
                f"model {spec.source} changed since it was inspected (its SHA-256 is no longer "
                f"{spec.sha256}): inspect it again"
            )
        return data

    return _cached_session(spec.sha256, spec.providers, spec.intra_op_threads, load, spec.source)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# --- inspection -----------------------------------------------------------------------------------


def inspect_model(
    model: str | os.PathLike[str] | bytes,
    *,
    layout: Layout | None = None,
    input_range: Range | None = None,
    output_range: Range | None = None,
    size: int = DEFAULT_SIZE,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    intra_op_threads: int = 1,
) -> ModelSpec:
    """Read an ONNX model's conventions from its graph; the arguments given override.

    Parameters
    ----------
    model : str, path-like or bytes
        The ``.onnx`` file, or its bytes. A path is kept absolute in the spec: workers read it
        there.
    layout : {"NCHW", "NHWC"}, optional
        Default: the model's ``pupsnr.layout`` metadata, else the input shape (3 channels in
        position 1 is NCHW, last is NHWC), else the output shape.
    input_range, output_range : {"unit", "signed", "uint8"}, optional
        Default: ``pupsnr.input_range`` / ``pupsnr.output_range`` metadata, else "uint8" for a
        uint8 tensor. A float tensor does not tell [0, 1] from [-1, 1]: it needs the option or
        the metadata.
    size : int
        Image side in pixels (the images store's).
    providers : sequence of str
        onnxruntime execution providers for the workers (this process inspects on CPU).
    intra_op_threads : int
        Threads of each session.

    Returns
    -------
    ModelSpec
        Validated: the input and output shapes fit ``(n, 3, size, size)`` or
        ``(n, size, size, 3)``, checked on the static dimensions, and by a probe run on one
        zero image when the graph leaves the output's size open.

    Raises
    ------
    ValueError
        One line: what could not be inferred and the option that sets it; or the shape the
        model has against the one expected; or a model onnxruntime cannot load.
    """
    _check_positive("size", size)
    _check_positive("intra_op_threads", intra_op_threads)
    providers = check_providers(tuple(providers))
    for name, value, choices in (
        ("layout", layout, LAYOUTS),
        ("input_range", input_range, RANGES),
        ("output_range", output_range, RANGES),
    ):
        if value is not None:
            _check_choice(name, value, choices)
    stored: str | bytes
    if isinstance(model, bytes):
        data = stored = model
    elif isinstance(model, str | os.PathLike):
        stored = os.path.abspath(os.fspath(model))
        data = _load_bytes(stored)
    else:
        raise TypeError(f"model must be a path or bytes, got {type(model).__name__}")
    sha256 = hashlib.sha256(data).hexdigest()
    source = stored if isinstance(stored, str) else f"<{len(data)} bytes>"
    session = _cached_session(sha256, DEFAULT_PROVIDERS, intra_op_threads, lambda: data, source)
    inp, out = _single_io(session, source)
    meta = _metadata(session, source)
    given: dict[str, str | None] = {
        "layout": layout,
        "input_range": input_range,
        "output_range": output_range,
    }
    found = _infer_conventions(inp, out, meta, given, source)
    spec = ModelSpec(
        stored,
        sha256,
        found["layout"],
        found["input_range"],
        found["output_range"],
        inp.name,
        out.name,
        size=size,
        providers=providers,
        batch=_static_batch(inp.shape),
        intra_op_threads=intra_op_threads,
    )
    _check_shapes(spec, inp, out, session)
    return spec


def _static_batch(shape: Sequence[Any] | None) -> int | None:
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first > 0 else None


def _single_io(session: Any, source: str) -> tuple[Any, Any]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ValueError(f"the model {source} must take one input image batch, it takes {names}")
    for what, arg in (("input", inputs[0]), ("output", outputs[0])):
        if arg.type not in _ELEMENT_TYPES:
            raise ValueError(
                f"the model's {what} {arg.name!r} is a {arg.type}: only "
                f"{', '.join(_ELEMENT_TYPES)} are supported"
            )
        if arg.shape and len(arg.shape) != 4:  # an empty shape is an unknown one
            raise ValueError(
                f"the model's {what} {arg.name!r} must be 4-D (batch, 3, size, size) or "
                f"(batch, size, size, 3), got shape {_show(arg.shape)}"
            )
    return inputs[0], outputs[0]


def _metadata(session: Any, source: str) -> dict[str, str]:
    props = dict(session.get_modelmeta().custom_metadata_map)
    meta = {}
    for name, key in METADATA_KEYS.items():
        if key in props:
            value = props[key].strip()
            choices = LAYOUTS if name == "layout" else RANGES
            if value not in choices:
                raise ValueError(
                    f"the model {source} declares {key}={value!r} in its metadata, which must "
                    f"be one of {choices} (override it with {OPTIONS[name]})"
                )
            meta[name] = value
    return meta


def _layout_of(shape: Sequence[Any] | None) -> str | None:
    if not shape or len(shape) != 4:
        return None
    first, last = shape[1] == 3, shape[3] == 3
    return None if first == last else ("NCHW" if first else "NHWC")


def _range_of(arg: Any) -> str | None:
    return "uint8" if arg.type == "tensor(uint8)" else None


def _infer_conventions(
    inp: Any, out: Any, meta: dict[str, str], given: dict[str, str | None], source: str
) -> dict[str, Any]:
    """Layout and ranges: the argument, else the metadata, else the graph; one error for all."""
    graph = {
        "layout": _layout_of(inp.shape) or _layout_of(out.shape),
        "input_range": _range_of(inp),
        "output_range": _range_of(out),
    }
    found: dict[str, Any] = {}
    unknown = []
    for name in ("layout", "input_range", "output_range"):
        value = given[name] or meta.get(name) or graph[name]
        if value is None:
            unknown.append(_why_unknown(name, inp, out))
        else:
            found[name] = value
    if unknown:
        raise ValueError(f"cannot tell from the model {source}: " + "; ".join(unknown))
    for name, arg in (("input_range", inp), ("output_range", out)):
        if arg.type == "tensor(uint8)" and found[name] != "uint8":
            raise ValueError(
                f"{name} {found[name]!r} ({RANGE_MEANINGS[found[name]]}) does not fit the "
                f"model's uint8 {name.split('_')[0]}: it can only be 'uint8'"
            )
    return found


def _why_unknown(name: str, inp: Any, out: Any) -> str:
    if name == "layout":
        return (
            f"its layout (input shape {_show(inp.shape)}, output shape {_show(out.shape)}: no "
            f"single axis of 3 channels in position 1 or last, no {METADATA_KEYS[name]} "
            f"metadata): set {OPTIONS[name]} to one of {LAYOUTS}"
        )
    arg = inp if name == "input_range" else out
    meanings = ", ".join(f"{r!r} {m}" for r, m in RANGE_MEANINGS.items())
    return (
        f"its {name.replace('_', ' ')} ({arg.type} {name.split('_')[0]} {arg.name!r}, no "
        f"{METADATA_KEYS[name]} metadata): set {OPTIONS[name]} to one of {meanings}"
    )


def _expected(layout: str, size: int) -> tuple[int, int, int]:
    return (3, size, size) if layout == "NCHW" else (size, size, 3)


def _show(shape: Sequence[Any] | None) -> str:
    if not shape:
        return "(unknown)"
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"


def _shape_error(spec: ModelSpec, what: str, shape: Sequence[Any], how: str = "") -> ValueError:
    want = "(n, " + ", ".join(map(str, _expected(spec.layout, spec.size))) + ")"
    return ValueError(
        f"the model's {what} shape {_show(shape)}{how} does not match {want} "
        f"(layout {spec.layout}, images {spec.size}x{spec.size})"
    )


def _fits(shape: Sequence[Any], expected: tuple[int, ...]) -> bool:
    """Whether the static dimensions (after the batch) equal ``expected``."""
    return all(
        not isinstance(d, int) or d < 0 or d == e for d, e in zip(shape[1:], expected, strict=True)
    )


def _check_shapes(spec: ModelSpec, inp: Any, out: Any, session: Any) -> None:
    expected = _expected(spec.layout, spec.size)
    if inp.shape and not _fits(inp.shape, expected):
        raise _shape_error(spec, "input", inp.shape)
    if out.shape and not _fits(out.shape, expected):
        raise _shape_error(spec, "output", out.shape)
    static = bool(out.shape) and all(isinstance(d, int) and d > 0 for d in out.shape[1:])
    if static:
        return
    probe = np.zeros((spec.batch or 1, spec.size, spec.size, 3), dtype=np.uint8)
    x = encode_input(probe, spec.input_range, _ELEMENT_TYPES[inp.type], spec.layout)
    try:
        y = session.run([spec.output_name], {spec.input_name: x})[0]
    except Exception as err:  # onnxruntime's own exception types
        raise ValueError(
            f"the model {spec.source} fails on a probe of {_show(x.shape)} zero images: "
            f"{_first_line(err)}"
        ) from err
    if y.ndim != 4 or y.shape[1:] != expected or len(y) != len(x):
        raise _shape_error(spec, "output", y.shape, f" (from a probe run on {_show(x.shape)})")


# --- the kernel -----------------------------------------------------------------------------------


def _input_table(input_range: str, dtype: np.dtype) -> np.ndarray:
    x = np.arange(256, dtype=np.float64)
    values = {"unit": x / 255, "signed": x / 127.5 - 1, "uint8": x}[input_range]
    return values.astype(dtype)


def encode_input(
    images: np.ndarray, input_range: Range, dtype: np.dtype | type, layout: Layout
) -> np.ndarray:
    """uint8 images -> the model's input tensor.

    Parameters
    ----------
    images : np.ndarray
        ``(n, h, w, 3)`` uint8 RGB, in memory.
    input_range : {"unit", "signed", "uint8"}
        Encoding (see the module docstring); "uint8" with a uint8 ``dtype`` passes the pixels.
    dtype : dtype
        The input's element type: float32, float64, float16 or uint8.
    layout : {"NCHW", "NHWC"}
        The input's layout.

    Returns
    -------
    np.ndarray
        ``(n, 3, h, w)`` or ``(n, h, w, 3)``, C-contiguous, ``dtype``.

    Examples
    --------
    >>> img = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3)
    >>> encode_input(img, "unit", np.float32, "NCHW").ravel()
    array([0. , 0.2, 1. ], dtype=float32)
    """
    dtype = np.dtype(dtype)
    view = images.transpose(0, 3, 1, 2) if layout == "NCHW" else images
    if dtype == np.uint8:
        if input_range != "uint8":
            raise ValueError(
                f"a uint8 input can only have input_range 'uint8', got {input_range!r}"
            )
        return np.ascontiguousarray(view)
    return _input_table(input_range, dtype)[view]  # fancy indexing: a new C-contiguous array


def decode_output(outputs: np.ndarray, output_range: Range) -> np.ndarray:
    """The model's outputs -> uint8 pixels, rounded as an image file stores them.

    Clip to the range, scale to [0, 255], round half to even (``np.rint``), in the outputs'
    float type (float16 is computed in float32); NaN becomes 0. A uint8 output is returned as
    it is.

    Parameters
    ----------
    outputs : np.ndarray
        Any shape; float16, float32, float64 or uint8.
    output_range : {"unit", "signed", "uint8"}
        Encoding of the values (see the module docstring).

    Returns
    -------
    np.ndarray
        Same shape, uint8.

    Examples
    --------
    >>> decode_output(np.array([-0.1, 0.5, 0.2, 1.5], dtype=np.float32), "unit")
    array([  0, 128,  51, 255], dtype=uint8)
    >>> decode_output(np.array([-1.0, 0.0, 1.0]), "signed")
    array([  0, 128, 255], dtype=uint8)
    """
    _check_choice("output_range", output_range, RANGES)
    if outputs.dtype == np.uint8:
        if output_range != "uint8":
            raise ValueError(
                f"a uint8 output can only have output_range 'uint8', got {output_range!r}"
            )
        return outputs
    if outputs.dtype.kind != "f":
        raise TypeError(f"outputs must be float or uint8, got {outputs.dtype}")
    work = outputs.astype(np.float32) if outputs.dtype.itemsize < 4 else outputs
    one = work.dtype.type(1)
    if output_range == "unit":
        values = np.clip(work, 0, one) * work.dtype.type(255)
    elif output_range == "signed":
        values = (np.clip(work, -one, one) + one) * work.dtype.type(127.5)
    else:
        values = np.clip(work, 0, work.dtype.type(255))
    np.rint(values, out=values)
    values[np.isnan(values)] = 0
    return values.astype(np.uint8)


def _batches(x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """The whole chunk at once, or runs of the model's fixed batch size, the last padded."""
    if batch is None:
        return [x]
    out = []
    for start in range(0, len(x), batch):
        part = x[start : start + batch]
        if len(part) < batch:
            pad = np.broadcast_to(x[:1] * 0, (batch - len(part), *x.shape[1:]))
            part = np.concatenate([part, pad])
        out.append(part)
    return out


def _check_images(images: np.ndarray, size: int) -> None:
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape (n, {size}, {size}, 3), got {images.shape}")


def run_model_kernel(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Run the model on a batch of images: uint8 in, its outputs rounded to uint8 out.

    Parameters
    ----------
    images : np.ndarray
        ``(n, size, size, 3)`` uint8 RGB, in memory: the model's input image (already the
        variant: gray, mosaic ...).
    spec : ModelSpec
        From :func:`inspect_model`.

    Returns
    -------
    np.ndarray
        ``(n, size, size, 3)`` uint8: :func:`decode_output` of the model's output.

    Notes
    -----
    The whole batch is one ``session.run`` (or runs of ``spec.batch`` images when the model's
    batch size is fixed), on this process's session (:func:`get_session`).
    """
    _check_images(images, spec.size)
    n = len(images)
    if n == 0:
        return np.empty_like(images)
    session = get_session(spec)
    dtype = _ELEMENT_TYPES[session.get_inputs()[0].type]
    x = encode_input(images, spec.input_range, dtype, spec.layout)
    parts = _batches(x, spec.batch)
    outs = [session.run([spec.output_name], {spec.input_name: part})[0] for part in parts]
    for part, out in zip(parts, outs, strict=True):
        if out.shape != (len(part), *_expected(spec.layout, spec.size)):
            raise _shape_error(spec, "output", out.shape, f" (on input {_show(part.shape)})")
    y = outs[0] if len(outs) == 1 else np.concatenate(outs)
    pixels = decode_output(y[:n], spec.output_range)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pixels)


# --- the lazy wrapper -----------------------------------------------------------------------------


def resolve_input(variant: str | Kernel | VariantSpec) -> VariantSpec:
    """The model's input as a :class:`~pupsnr_dask.registry.VariantSpec`.

    A name resolves as ``run`` resolves it (:func:`pupsnr_dask.registry.resolve_variant`:
    ``true``, ``gray``, ``mosaic``, ``sr4``, ``jpeg20``, ``noise25``, ``module:function``, an
    entry point), so the model sees the same pixels as the results' p_i were computed on; a
    callable is a plug-in kernel ``(n, h, w, 3) uint8 -> (n, h, w, 3) uint8``.
    """
    if isinstance(variant, VariantSpec):
        return variant
    return resolve_variant(variant)


def variant_kernel(variant: str | Kernel) -> Kernel:
    """The NumPy kernel of a variant name that needs no keys, or the kernel given."""
    spec = resolve_input(variant)
    if spec.needs_keys:
        raise ValueError(f"variant {spec.name!r} needs each image's source: use resolve_input")
    return spec.apply


def predict_kernel(
    images: np.ndarray,
    spec: ModelSpec,
    variant: Kernel | VariantSpec,
    keys: Sequence[str] | np.ndarray | None = None,
) -> np.ndarray:
    """The model's outputs on the variant of ``images``: ``(n, size, size, 3)`` uint8 both.

    ``keys``: each image's ``source``, for the variants that need it (``noise<sigma>`` seeds
    its noise from it, as ``run`` does).
    """
    if isinstance(variant, VariantSpec):
        view = variant.apply(images, None if keys is None else [str(k) for k in keys])
    else:
        view = variant(images)
    return run_model_kernel(np.asarray(view), spec)


def predict(
    images: da.Array,
    spec: ModelSpec,
    variant: str | Kernel | VariantSpec = "true",
    keys: Sequence[str] | np.ndarray | None = None,
) -> da.Array:
    """Lazy model outputs on an input variant of the images, one task per chunk.

    Parameters
    ----------
    images : dask.array.Array
        img_true, ``(n, size, size, 3)`` uint8, chunked along the image axis only, lazy.
    spec : ModelSpec
        From :func:`inspect_model`.
    variant : str, callable or VariantSpec
        The model's input (:func:`resolve_input`): a variant name ("true", "gray", "mosaic",
        "sr4", ...), built by the same kernel as ``run`` builds it, or a NumPy kernel
        ``(n, h, w, 3) uint8 -> (n, h, w, 3) uint8``.
    keys : sequence of str, optional
        The ``n`` images' ``source`` strings, in order: needed by the variants that seed
        randomness from the image (``noise<sigma>``).

    Returns
    -------
    dask.array.Array
        ``(n, size, size, 3)`` uint8, the chunks of ``images``, lazy; its name is a
        deterministic token of the images, the model's SHA-256, the spec, the variant and the
        keys. Nothing is computed.
    """
    check_images(images, spec)
    kernel = resolve_input(variant)
    if kernel.needs_keys and keys is None:
        raise ValueError(f"variant {kernel.name!r} needs keys: each image's source string")
    name = f"pupsnr-predict-{tokenize(images, spec.token(), kernel.name, kernel.params, keys)}"
    meta = np.empty((0, 0, 0, 0), dtype=np.uint8)
    if keys is None:
        return da.map_blocks(
            predict_kernel, images, spec=spec, variant=kernel, dtype=np.uint8, meta=meta, name=name
        )
    return da.blockwise(
        _predict_keyed,
        "iyxc",
        images,
        "iyxc",
        keys_array(keys, images.chunks[0]),
        "i",
        spec=spec,
        variant=kernel,
        dtype=np.uint8,
        meta=meta,
        name=name,
    )


def _predict_keyed(
    images: np.ndarray, keys: np.ndarray, spec: ModelSpec, variant: VariantSpec
) -> np.ndarray:
    return predict_kernel(images, spec, variant, keys)


def keys_array(keys: Sequence[str] | np.ndarray, chunks: tuple[int, ...]) -> da.Array:
    """The images' keys as a dask array of str objects chunked like the images."""
    values = np.asarray([str(k) for k in keys], dtype=object)
    if len(values) != sum(chunks):
        raise ValueError(f"keys must give one key per image: {len(values)} for {sum(chunks)}")
    return da.from_array(values, chunks=(chunks,), name=f"pupsnr-keys-{tokenize(values)}")


def check_images(images: da.Array, spec: ModelSpec) -> None:
    """Raise unless ``images`` is a lazy uint8 ``(n, size, size, 3)`` array chunked on ``n``."""
    if not isinstance(images, da.Array):
        raise TypeError(f"images must be a dask array, got {type(images).__name__}")
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (see inspect_model), got {type(spec).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (spec.size, spec.size, 3):
        raise ValueError(
            f"images must have shape (n, {spec.size}, {spec.size}, 3) for this spec, "
            f"got {images.shape}"
        )
    if any(len(c) != 1 for c in images.chunks[1:]):
        raise ValueError(f"images must be chunked along the image axis only, got {images.chunks}")
