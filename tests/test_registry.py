"""The variant and metric tables: built-in names, the grammar, plug-ins and entry points."""

from __future__ import annotations

import ast
import pickle
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pupsnr_dask
from pupsnr_dask import registry
from pupsnr_dask.kernels import quality, task_variants
from pupsnr_dask.kernels.variants import gray_kernel, mosaic_kernel, true_kernel
from pupsnr_dask.registry import (
    METRICS,
    VariantPluginError,
    available_variants,
    resolve_metrics,
    resolve_variant,
    resolve_variants,
)

IMAGES = np.random.default_rng(7).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
KEYS = ["a.png", "b.png"]


# --- plug-ins defined in this test module ----------------------------------------------------


def invert(images):
    """Colours inverted (255 - value)."""
    return 255 - images


def halve(images):
    return images[:, ::2, ::2]


def to_float(images):
    return images.astype(np.float32)


def explode(images):
    raise ZeroDivisionError("no\ninput today")


def as_list(images):
    return images.tolist()


def in_place(images):
    images[:] = 0
    return images


# --- built-in names and families -------------------------------------------------------------


@pytest.mark.parametrize("name", ["true", "gray", "mosaic"])
def test_builtin_names_run_the_transforms_kernels(name):
    spec = resolve_variant(name)
    assert (spec.name, spec.family, spec.params, spec.needs_keys) == (name, name, {}, False)
    want = {
        "true": true_kernel,
        "gray": gray_kernel,
        "mosaic": mosaic_kernel,
    }[name](IMAGES)
    np.testing.assert_array_equal(spec.apply(IMAGES), want)


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("sr4", lambda: task_variants.sr_kernel(IMAGES, 4)),
        ("jpeg20", lambda: task_variants.jpeg_kernel(IMAGES, 20)),
        ("noise2.5", lambda: task_variants.noise_kernel(IMAGES, KEYS, 2.5)),
        ("blur2", lambda: task_variants.blur_kernel(IMAGES, 2.0)),
    ],
)
def test_family_names_run_their_kernel_with_the_parameter(name, want):
    spec = resolve_variant(name)
    assert spec.family == name.rstrip("0123456789.")
    assert spec.needs_keys == (spec.family == "noise")
    np.testing.assert_array_equal(spec.apply(IMAGES, KEYS), want())
    assert "\n" not in spec.definition and spec.definition
    pickle.loads(pickle.dumps(spec))  # the kernel travels to dask workers


def test_family_definitions_carry_the_parameter():
    assert "by a factor 4," in resolve_variant("sr4").definition
    assert "quality 20," in resolve_variant("jpeg20").definition
    assert "standard deviation 2.5 " in resolve_variant("noise2.5").definition
    assert "GaussianBlur(1.5)" in resolve_variant("blur1.5").definition


def test_noise_without_keys_is_refused():
    with pytest.raises(ValueError, match="'noise25' needs the images' keys"):
        resolve_variant("noise25").apply(IMAGES)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sr1", "variant 'sr1': factor must be written as in sr<k>: k an integer >= 2"),
        ("jpeg0", "variant 'jpeg0': quality must be written as in jpeg<q>"),
        ("noise25.0", "variant 'noise25.0': sigma must be written as in noise<sigma>"),
        (
            "sharpen",
            "variant must be one of ('true', 'gray', 'mosaic'), sr<k>, jpeg<q>, noise<sigma>, "
            "blur<radius>, 'module:function'",
        ),
        ("", "got ''"),
    ],
)
def test_unknown_names_and_bad_parameters_name_value_and_grammar(name, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        resolve_variant(name)
    assert len(str(info.value).splitlines()) == 1


def test_a_selection_must_not_repeat_or_be_empty():
    assert [s.name for s in resolve_variants(["true", "sr2", invert])] == [
        "true",
        "sr2",
        "test_registry:invert",
    ]
    with pytest.raises(ValueError, match=r"must not repeat, got \['sr2'\]"):
        resolve_variants(["sr2", "gray", "sr2"])
    with pytest.raises(ValueError, match="at least one"):
        resolve_variants([])
    with pytest.raises(TypeError, match="sequence of names"):
        resolve_variants("true,gray")


# --- user plug-ins ---------------------------------------------------------------------------


def test_a_plugin_named_module_function_resolves_and_runs():
    spec = resolve_variant("test_registry:invert")
    assert (spec.name, spec.family) == ("test_registry:invert", "plugin")
    assert spec.params == {"function": "test_registry:invert"}
    assert spec.definition == "Colours inverted (255 - value)."
    np.testing.assert_array_equal(spec.apply(IMAGES), 255 - IMAGES)
    again = pickle.loads(pickle.dumps(spec.kernel))  # by reference: workers import the module
    np.testing.assert_array_equal(again(IMAGES), 255 - IMAGES)


def test_a_plugin_given_as_a_callable_is_named_after_it():
    spec = resolve_variant(invert)
    assert spec.name == "test_registry:invert"
    np.testing.assert_array_equal(spec.apply(IMAGES), 255 - IMAGES)


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (
            "halve",
            "variant plug-in 'test_registry:halve' returned shape (2, 16, 16, 3) uint8; "
            "expected (2, 32, 32, 3) uint8",
        ),
        (
            "to_float",
            "variant plug-in 'test_registry:to_float' returned shape (2, 32, 32, 3) float32; "
            "expected (2, 32, 32, 3) uint8",
        ),
        (
            "explode",
            "variant plug-in 'test_registry:explode' raised ZeroDivisionError: no input today "
            "(on input (2, 32, 32, 3) uint8)",
        ),
        (
            "as_list",
            "variant plug-in 'test_registry:as_list' returned a list, not a numpy array; "
            "expected (2, 32, 32, 3) uint8",
        ),
        (
            "in_place",
            "variant plug-in 'test_registry:in_place' raised ValueError: assignment destination "
            "is read-only",
        ),
    ],
)
def test_a_broken_plugin_fails_with_one_line_naming_it(func, message):
    spec = resolve_variant(f"test_registry:{func}")
    images = IMAGES.copy()
    with pytest.raises(VariantPluginError) as info:
        spec.apply(images)
    assert str(info.value).startswith(message), str(info.value)
    assert len(str(info.value).splitlines()) == 1
    assert isinstance(info.value, ValueError)  # the CLI's user-error class
    np.testing.assert_array_equal(images, IMAGES)  # img_true was not modified


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xq:f", "cannot import module 'no_such_module_xq' (ModuleNotFoundError"),
        ("test_registry:missing", "'test_registry' has no attribute 'missing'"),
        ("test_registry:IMAGES", "is a ndarray, not a function"),
        ("a:b:c", "must be written 'module:function'"),
        ("mod:", "must be written 'module:function'"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_fails_naming_it(spec, message):
    with pytest.raises(VariantPluginError, match=re.escape(message)) as info:
        resolve_variant(spec)
    assert len(str(info.value).splitlines()) == 1


# --- entry points from a real installed distribution -----------------------------------------


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A distribution 'pupsnr-test-plugins' in a dist-info on sys.path, with its module."""
    (tmp_path / "pupsnr_test_plugins_mod.py").write_text(
        textwrap.dedent(
            '''
            import numpy as np

            def swap_rb(images):
                """Red and blue channels swapped."""
                return np.ascontiguousarray(images[..., ::-1])

            def wrong(images):
                return images[:1]
            '''
        )
    )
    info = tmp_path / "pupsnr_test_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pupsnr-test-plugins\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[pupsnr_dask.variants]\n"
        "swap = pupsnr_test_plugins_mod:swap_rb\n"
        "wrong = pupsnr_test_plugins_mod:wrong\n"
        "broken = pupsnr_test_plugins_mod:not_there\n"
        "true = pupsnr_test_plugins_mod:swap_rb\n"
        "sr3x = pupsnr_test_plugins_mod:swap_rb\n"
        "\n[some.other.group]\nother = pupsnr_test_plugins_mod:swap_rb\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("pupsnr_test_plugins_mod", None)


def test_an_entry_point_adds_a_named_input(installed_plugin):
    spec = resolve_variant("swap")
    assert (spec.name, spec.family) == ("swap", "entry_point")
    assert spec.params == {
        "function": "pupsnr_test_plugins_mod:swap_rb",
        "entry_point": "swap",
        "distribution": "pupsnr-test-plugins",
    }
    assert spec.definition == "Red and blue channels swapped."
    np.testing.assert_array_equal(spec.apply(IMAGES), IMAGES[..., ::-1])
    listed = {v.name: v for v in available_variants()}
    assert listed["swap"].family == "entry_point"
    assert "pupsnr_test_plugins_mod:swap_rb" in listed["swap"].definition


def test_an_entry_point_cannot_shadow_a_builtin_name_or_family(installed_plugin):
    names = set(registry.entry_points())
    assert {"swap", "wrong", "broken"} <= names
    assert not names & {"true", "sr3x", "other"}
    assert resolve_variant("true").family == "true"


def test_a_broken_entry_point_fails_with_one_line(installed_plugin):
    with pytest.raises(VariantPluginError) as info:
        resolve_variant("broken")
    assert str(info.value).startswith(
        "variant plug-in 'broken' (entry point pupsnr_test_plugins_mod:not_there of "
        "pupsnr-test-plugins) cannot be loaded (AttributeError"
    )
    with pytest.raises(VariantPluginError, match=re.escape("'wrong' (entry point")) as info:
        resolve_variant("wrong").apply(IMAGES)
    assert "returned shape (1, 32, 32, 3) uint8; expected (2, 32, 32, 3) uint8" in str(info.value)


def test_unknown_names_list_the_installed_entry_points(installed_plugin):
    with pytest.raises(ValueError, match=r"or an installed \('broken', 'swap', 'wrong'\)"):
        resolve_variant("inpaint")


# --- the listing and the metrics -------------------------------------------------------------


def test_available_variants_lists_every_name_and_family_in_one_line_each():
    listing = available_variants()
    names = [v.name for v in listing]
    assert names[:7] == [
        "true",
        "gray",
        "mosaic",
        "sr<k>",
        "jpeg<q>",
        "noise<sigma>",
        "blur<radius>",
    ]
    for v in listing:
        assert v.definition and "\n" not in v.definition
    assert "Pillow BICUBIC down by a factor k," in listing[3].definition
    assert "k an integer >= 2" in listing[3].definition


def test_metrics_table():
    assert tuple(METRICS) == quality.METRIC_NAMES
    assert {m: (s.units, s.higher_is_better) for m, s in METRICS.items()} == {
        "psnr": ("dB", True),
        "psnr_y": ("dB", True),
        "ssim": ("1", True),
    }
    a = IMAGES
    b = 255 - IMAGES
    for name, spec in METRICS.items():
        assert spec.name == name and "\n" not in spec.definition
        np.testing.assert_array_equal(spec.kernel(a, b), getattr(quality, name)(a, b))
    assert [m.name for m in resolve_metrics(["ssim", "psnr"])] == ["ssim", "psnr"]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (["psnr", "lpips"], "metric must be one of ('psnr', 'psnr_y', 'ssim'), got 'lpips'"),
        (["ssim", "ssim"], "metrics must not repeat"),
        ([], "at least one metric"),
    ],
)
def test_bad_metric_selections_are_refused(metrics, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_metrics(metrics)


# --- layering: the kernels import no dask and only other kernels; the registry no dask -----------

_PACKAGE = Path(pupsnr_dask.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("path", sorted((_PACKAGE / "kernels").glob("*.py")), ids=str)
def test_kernels_import_only_numpy_pillow_scipy_and_the_stdlib(path):
    allowed = {"numpy", "PIL", "scipy"} | set(sys.stdlib_module_names)
    ours = {n for n in _imports(path) if n.split(".")[0] == "pupsnr_dask"}
    assert {n.split(".")[0] for n in _imports(path) - ours} <= allowed
    assert all(n.startswith("pupsnr_dask.kernels.") for n in ours), ours  # other kernels only


def test_registry_imports_no_dask_zarr_xarray_or_fsspec():
    roots = {n.split(".")[0] for n in _imports(_PACKAGE / "registry.py")}
    assert not roots & {"dask", "distributed", "zarr", "xarray", "fsspec"}
