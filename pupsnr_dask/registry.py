"""The tables of inputs (variants) and metrics, as data: what each name means and computes.

A variant name resolves (:func:`resolve_variant`) to a :class:`VariantSpec`, in this order:

1. a built-in name of SPEC.md: ``true``, ``gray``, ``mosaic`` (:data:`BUILTIN_VARIANTS`);
2. a parameterised family: ``sr<k>``, ``jpeg<q>``, ``noise<sigma>``, ``blur<radius>``
   (:data:`pupsnr_dask.kernels.task_variants.FAMILIES`, grammar in that module);
3. ``"module:function"`` (it contains a ``:``): a user function imported by name;
4. a name that an installed package registers in the entry-point group
   ``pupsnr_dask.variants`` (:data:`ENTRY_POINT_GROUP`), e.g. in its ``pyproject.toml``::

       [project.entry-points."pupsnr_dask.variants"]
       inpaint = "mypkg.inputs:inpaint"

A plug-in (3 or 4, or a callable passed directly) receives ``(n, h, w, 3)`` uint8 img_true,
read-only, and must return a NumPy array of the same shape and dtype. It is wrapped
(:class:`PluginKernel`) so that a wrong shape, dtype or type, or an exception inside it, raises
one :class:`VariantPluginError` naming the plug-in and what it returned. The wrapper pickles
the function by reference: Dask workers must be able to import its module (install the
package, or ship the module with ``Client.upload_file``).

Pure Python: this module imports neither Dask nor Zarr. The ``true``, ``gray`` and ``mosaic``
kernels are imported from :mod:`pupsnr_dask.transforms` on first use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, NamedTuple

import numpy as np

from pupsnr_dask.kernels import quality
from pupsnr_dask.kernels import variants as variant_kernels
from pupsnr_dask.kernels.task_variants import FAMILIES, parse_variant

ENTRY_POINT_GROUP = "pupsnr_dask.variants"

#: The inputs of SPEC.md: name -> (kernel in :mod:`pupsnr_dask.transforms`, definition).
BUILTIN_VARIANTS: dict[str, tuple[str, str]] = {
    "true": ("true_kernel", "img_true itself"),
    "gray": (
        "gray_kernel",
        "Pillow convert('L') (ITU-R 601-2 luma, rounded to uint8) in 3 equal channels "
        "(input of a colourisation model)",
    ),
    "mosaic": (
        "mosaic_kernel",
        "PU at scale 16 rounded to uint8, then Pillow GaussianBlur(radius=4) (input of a "
        "mosaic-removal model)",
    ),
}

_PLUGIN_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_ENTRY_POINT_NAME = re.compile(r"[A-Za-z][\w.-]*")


class VariantPluginError(ValueError):
    """A variant plug-in cannot be loaded, raised, or returned the wrong thing (one line)."""


@dataclass(frozen=True)
class VariantSpec:
    """One input (variant): its name, how it is made, and what it means.

    Attributes
    ----------
    name : str
        The name stored in the results' ``variant`` coordinate (``"sr4"``,
        ``"mypkg.inputs:inpaint"``).
    family : str
        ``"true"``, ``"gray"``, ``"mosaic"``, a key of ``FAMILIES`` (``"sr"``, ``"jpeg"``,
        ``"noise"``, ``"blur"``), ``"plugin"`` or ``"entry_point"``.
    params : dict
        The family's parameter (``{"factor": 4}``); ``{}`` for the built-in names; for
        plug-ins ``{"function": "module:qualname"}`` (and ``"entry_point"``,
        ``"distribution"`` for an entry point). JSON-serialisable, for the results'
        attributes.
    kernel : callable
        ``kernel(images) -> images``, or ``kernel(images, keys)`` when ``needs_keys``:
        ``(n, h, w, 3)`` uint8 to the same. Picklable.
    definition : str
        One line: what the input is.
    needs_keys : bool
        The kernel needs each image's key (its ``source`` string) after the images.
    """

    name: str
    family: str
    params: dict[str, Any] = field(hash=False)
    kernel: Callable[..., np.ndarray] = field(compare=False)
    definition: str
    needs_keys: bool = False

    def apply(self, images: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
        """Run the kernel on a batch; ``keys`` (one per image) is needed when ``needs_keys``."""
        if self.needs_keys:
            if keys is None:
                raise ValueError(f"variant {self.name!r} needs the images' keys (source strings)")
            return self.kernel(images, keys)
        return self.kernel(images)


def _describe(out: Any) -> str:
    if isinstance(out, np.ndarray):
        return f"shape {out.shape} {out.dtype}"
    return f"a {type(out).__name__}, not a numpy array"


class PluginKernel:
    """A user's variant function, checked on every call; picklable by reference.

    Parameters
    ----------
    label : str
        How errors name the plug-in: ``'mypkg.inputs:inpaint'``, or for an entry point
        ``'inpaint' (entry point mypkg.inputs:inpaint)``.
    func : callable
        ``func(images) -> images``: ``(n, h, w, 3)`` uint8 -> the same shape, uint8.
    """

    def __init__(self, label: str, func: Callable[[np.ndarray], Any]) -> None:
        self.label = label
        self.func = func

    def __repr__(self) -> str:
        return f"PluginKernel({self.label})"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Call the plug-in on a read-only view of ``images`` and check what it returns."""
        view = images.view()
        view.flags.writeable = False  # img_true is shared with every other variant
        expected = f"expected {images.shape} {images.dtype}"
        try:
            out = self.func(view)
        except Exception as err:
            text = " ".join(str(err).split())
            raise VariantPluginError(
                f"variant plug-in {self.label} raised {type(err).__name__}: {text} "
                f"(on input {images.shape} {images.dtype})"
            ) from err
        if (
            not isinstance(out, np.ndarray)
            or out.shape != images.shape
            or out.dtype != images.dtype
        ):
            raise VariantPluginError(
                f"variant plug-in {self.label} returned {_describe(out)}; {expected}"
            )
        return out


def _first_line(func: Callable[..., Any]) -> str:
    doc = (getattr(func, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _function_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}:{getattr(func, '__qualname__', type(func).__name__)}"


def _import_function(spec: str) -> Callable[..., Any]:
    """Import ``"module:qualname"``; a VariantPluginError (one line) if that fails."""
    if not _PLUGIN_SPEC.fullmatch(spec):
        raise VariantPluginError(
            f"variant plug-in must be written 'module:function' (e.g. 'mypkg.inputs:inpaint'), "
            f"got {spec!r}"
        )
    module_name, qualname = spec.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise VariantPluginError(
            f"variant plug-in {spec!r}: cannot import module {module_name!r} "
            f"({type(err).__name__}: {' '.join(str(err).split())})"
        ) from err
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise VariantPluginError(
                f"variant plug-in {spec!r}: {module_name!r} has no attribute {qualname!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise VariantPluginError(
            f"variant plug-in {spec!r} is a {type(obj).__name__}, not a function"
        )
    return obj


def plugin_variant(function: str | Callable[[np.ndarray], Any]) -> VariantSpec:
    """The spec of a user function, given as ``"module:function"`` or as the callable.

    Its ``name`` is ``"module:qualname"`` (for a callable, from its ``__module__`` and
    ``__qualname__``); its definition is the first line of its docstring.
    """
    if isinstance(function, str):
        name, func = function, _import_function(function)
    elif callable(function):
        name, func = _function_name(function), function
    else:
        raise TypeError(
            f"variant must be a name or a callable, got {type(function).__name__} {function!r}"
        )
    return VariantSpec(
        name=name,
        family="plugin",
        params={"function": name},
        kernel=PluginKernel(repr(name), func),
        definition=_first_line(func) or f"user function {name}",
    )


def _is_builtin_name(name: str) -> bool:
    if name in BUILTIN_VARIANTS:
        return True
    try:
        parse_variant(name)
    except ValueError:
        return any(name.startswith(prefix) for prefix in FAMILIES)
    return True


def entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed entry points of :data:`ENTRY_POINT_GROUP`, by name.

    Names that a built-in or a family prefix already takes (``true``, ``sr3``, ``srx``), that
    are not of the form ``[A-Za-z][A-Za-z0-9_.-]*``, or that two distributions both register
    are left out: they would be ambiguous on a command line.
    """
    found: dict[str, list[metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return {
        name: eps[0]
        for name, eps in sorted(found.items())
        if len({ep.value for ep in eps}) == 1
        and _ENTRY_POINT_NAME.fullmatch(name)
        and not _is_builtin_name(name)
    }


def _entry_point_variant(ep: metadata.EntryPoint) -> VariantSpec:
    dist = ep.dist.name if ep.dist is not None else "?"
    label = f"{ep.name!r} (entry point {ep.value} of {dist})"
    try:
        func = ep.load()
    except Exception as err:
        raise VariantPluginError(
            f"variant plug-in {label} cannot be loaded ({type(err).__name__}: "
            f"{' '.join(str(err).split())})"
        ) from err
    if not callable(func):
        raise VariantPluginError(
            f"variant plug-in {label} is a {type(func).__name__}, not a function"
        )
    return VariantSpec(
        name=ep.name,
        family="entry_point",
        params={"function": ep.value, "entry_point": ep.name, "distribution": dist},
        kernel=PluginKernel(label, func),
        definition=_first_line(func) or f"user function {ep.value} (package {dist})",
    )


def _builtin_variant(name: str) -> VariantSpec:
    attr, definition = BUILTIN_VARIANTS[name]
    return VariantSpec(name, name, {}, getattr(variant_kernels, attr), definition)


def _family_variant(name: str) -> VariantSpec:
    import functools

    prefix, params = parse_variant(name)
    family = FAMILIES[prefix]
    (value,) = params.values()
    return VariantSpec(
        name=name,
        family=prefix,
        params=params,
        kernel=functools.partial(family.kernel, **params),
        definition=family.definition.format(value=value),
        needs_keys=family.needs_keys,
    )


def _unknown(name: str) -> ValueError:
    installed = tuple(entry_points())
    return ValueError(
        f"variant must be one of {tuple(BUILTIN_VARIANTS)}, "
        + ", ".join(f.grammar.split(":")[0] for f in FAMILIES.values())
        + ", 'module:function'"
        + (f" or an installed {installed}" if installed else "")
        + f"; got {name!r}"
    )


def resolve_variant(variant: str | Callable[[np.ndarray], Any]) -> VariantSpec:
    """The :class:`VariantSpec` of a variant name, ``"module:function"`` or callable.

    Raises
    ------
    ValueError
        For an unknown name or a bad parameter, naming the value and the grammar.
    VariantPluginError
        (a ValueError) For a plug-in that cannot be imported or loaded.

    Examples
    --------
    >>> spec = resolve_variant("jpeg20")
    >>> spec.family, spec.params, spec.needs_keys
    ('jpeg', {'quality': 20}, False)
    """
    if callable(variant) and not isinstance(variant, str):
        return plugin_variant(variant)
    if not isinstance(variant, str):
        raise TypeError(
            f"variant must be a name or a callable, got {type(variant).__name__} {variant!r}"
        )
    if variant in BUILTIN_VARIANTS:
        return _builtin_variant(variant)
    if any(variant.startswith(prefix) for prefix in FAMILIES) and ":" not in variant:
        return _family_variant(variant)  # a bad parameter raises, naming the grammar
    if ":" in variant:
        return plugin_variant(variant)
    eps = entry_points()
    if variant in eps:
        return _entry_point_variant(eps[variant])
    raise _unknown(variant)


def resolve_variants(
    variants: Sequence[str | Callable[[np.ndarray], Any]],
) -> tuple[VariantSpec, ...]:
    """Resolve several variants; refuse an empty selection or a name given twice."""
    if isinstance(variants, str):
        raise TypeError(f"variants must be a sequence of names, got the str {variants!r}")
    specs = tuple(resolve_variant(v) for v in variants)
    if not specs:
        raise ValueError("variants must name at least one variant")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variants must not repeat, got {repeated} more than once")
    return specs


class VariantListing(NamedTuple):
    """One line of :func:`available_variants`."""

    name: str
    family: str
    definition: str


def available_variants() -> list[VariantListing]:
    """Every available input with its one-line definition, for ``pupsnr variants``.

    The built-in names, then one line per family (its grammar as the name), then the installed
    entry points (not loaded: the definition names the function). ``module:function`` is not
    listed: any importable function of the right kind works.

    Examples
    --------
    >>> [v.name for v in available_variants()][:5]
    ['true', 'gray', 'mosaic', 'sr<k>', 'jpeg<q>']
    """
    out = [VariantListing(n, n, d) for n, (_, d) in BUILTIN_VARIANTS.items()]
    for prefix, family in FAMILIES.items():
        pattern, rule = family.grammar.split(": ", 1)
        definition = family.definition.format(value=pattern[len(prefix) :].strip("<>"))
        out.append(VariantListing(pattern, prefix, f"{definition}; {rule}"))
    for name, ep in entry_points().items():
        dist = ep.dist.name if ep.dist is not None else "?"
        out.append(VariantListing(name, "entry_point", f"user function {ep.value} ({dist})"))
    return out


@dataclass(frozen=True)
class MetricSpec:
    """One quality metric of PU(variant, s) against img_true, per image.

    Attributes
    ----------
    name : str
        As in ``--metrics`` and in the results.
    long_name : str
        For axis labels.
    units : str
        ``"dB"`` or ``"1"`` (dimensionless).
    higher_is_better : bool
        True for every metric here.
    definition : str
        One line.
    aggregate : str
        How a dataset figure is formed from the per-image values.
    kernel : callable
        ``kernel(img_true, img_test) -> (n,)`` float64, from :mod:`pupsnr_dask.kernels.quality`.
    """

    name: str
    long_name: str
    units: str
    higher_is_better: bool
    definition: str
    aggregate: str
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(compare=False)


#: The metrics, by name; the order of :data:`pupsnr_dask.kernels.quality.METRIC_NAMES`.
METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(
        "psnr",
        "PSNR",
        "dB",
        True,
        "10*log10(255**2 / MSE), MSE over all pixels and RGB channels in float64; +inf for "
        "identical images",
        "mean of the per-image PSNRs (docs/definitions.md); the PSNR of the mean MSE is also "
        "reported",
        quality.psnr,
    ),
    "psnr_y": MetricSpec(
        "psnr_y",
        "PSNR on Y (BT.601)",
        "dB",
        True,
        "PSNR of the BT.601 luma Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255 (0-255 "
        "values, float64, not rounded, no border crop), data range 255, as BasicSR/MATLAB",
        "mean of the per-image values",
        quality.psnr_y,
    ),
    "ssim": MetricSpec(
        "ssim",
        "SSIM",
        "1",
        True,
        "SSIM (Wang et al. 2004): 11x11 Gaussian window sigma 1.5, K1 0.01, K2 0.03, data "
        "range 255, 5-pixel border cropped, mean over channels, as scikit-image's "
        "structural_similarity(gaussian_weights=True, use_sample_covariance=False)",
        "mean of the per-image values (there is no SSIM of a mean MSE)",
        quality.ssim,
    ),
}


def resolve_metrics(metrics: Sequence[str]) -> tuple[MetricSpec, ...]:
    """The specs of metric names; refuse an unknown, repeated or empty selection.

    Examples
    --------
    >>> [m.units for m in resolve_metrics(["psnr", "ssim"])]
    ['dB', '1']
    """
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, got the str {metrics!r}")
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metric must be one of {tuple(METRICS)}, got {m!r}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics must not repeat, got {metrics}")
    return tuple(METRICS[m] for m in metrics)
