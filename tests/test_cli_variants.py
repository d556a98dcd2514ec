"""`pupsnr variants`: every input and metric listed with its definition, without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pupsnr_dask import registry
from pupsnr_dask.cli import main
from pupsnr_dask.cli import run as run_cli
from pupsnr_dask.kernels.task_variants import FAMILIES


@pytest.fixture
def installed_inputs(tmp_path, monkeypatch):
    """A distribution with one entry point in the group pupsnr_dask.variants, on sys.path."""
    (tmp_path / "pupsnr_cli_inputs_mod.py").write_text(
        textwrap.dedent(
            '''
            def sepia(images):
                """A sepia tone."""
                return images
            '''
        )
    )
    info = tmp_path / "pupsnr_cli_inputs-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pupsnr-cli-inputs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pupsnr_dask.variants]\nsepia = pupsnr_cli_inputs_mod:sepia\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_lists_every_input_family_entry_point_and_metric(installed_inputs, capsys):
    assert main(["variants"]) == 0
    text = capsys.readouterr().out
    for name in ("true", "gray", "mosaic", "sr<k>", "jpeg<q>", "noise<sigma>", "blur<radius>"):
        assert f"\n  {name} " in text, name
    assert "\n  sepia " in text and "pupsnr_cli_inputs_mod:sepia" in text
    assert "--variant-plugin MODULE:FUNCTION" in text
    for metric in registry.METRICS.values():
        assert f"\n  {metric.name} " in text
    assert "65.481 R + 128.553 G + 24.966 B" in " ".join(text.split())
    assert "there is no SSIM of a mean MSE" in " ".join(text.split())


def test_json_lists_the_same_as_the_registry(installed_inputs, capsys):
    assert main(["variants", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in doc["variants"]] == [v.name for v in registry.available_variants()]
    assert "sepia" in [v["name"] for v in doc["variants"]]
    assert [m["name"] for m in doc["metrics"]] == list(registry.METRICS)
    assert all(m["higher_is_better"] for m in doc["metrics"])


def test_run_help_names_the_registry_families_and_metrics():
    """The help of `pupsnr run` is written without importing the registry: keep it in step."""
    grammar = tuple(f.grammar.split(":")[0] for f in FAMILIES.values())
    assert run_cli.TASK_FAMILIES == grammar
    assert run_cli.METRIC_NAMES == tuple(registry.METRICS)


def test_variants_imports_no_dask_xarray_pandas_or_scipy():
    probe = (
        "import sys\n"
        "from pupsnr_dask.cli import main\n"
        "main(['variants'])\n"
        "heavy = ('dask', 'xarray', 'zarr', 'distributed', 'pandas', 'scipy')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_an_installed_entry_point_input_runs_through_pupsnr_run(images_store, tmp_path):
    """A distribution on PYTHONPATH adds `swaprb` (entry point, nothing else registered): a
    `pupsnr run` process finds it by name and its PSNRs equal a per-image NumPy reference."""
    import os
    import subprocess
    import sys

    import xarray as xr
    from reference import psnr, pu

    site = tmp_path / "site"
    site.mkdir()
    (site / "pupsnr_swap_mod.py").write_text(
        "import numpy as np\n\n"
        "def swap_rb(images):\n"
        '    """Red and blue swapped."""\n'
        "    return np.ascontiguousarray(images[..., ::-1])\n"
    )
    info = site / "pupsnr_swap-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pupsnr-swap\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pupsnr_dask.variants]\nswaprb = pupsnr_swap_mod:swap_rb\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    listed = subprocess.run([sys.executable, "-m", "pupsnr_dask", "variants"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "swaprb" in listed.stdout and "pupsnr_swap_mod:swap_rb" in listed.stdout
    results = tmp_path / "r.zarr"
    argv = [sys.executable, "-m", "pupsnr_dask", "run", str(images_store), "-o", str(results),
            "--variants", "true,swaprb", "-q", "--n-workers", "2"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ds = xr.open_zarr(results)
    pixels = xr.open_zarr(images_store)["images"].values
    assert ds["variant"].values.tolist() == ["true", "swaprb"]
    for i, img in enumerate(pixels):
        for scale in ds["scale"].values.tolist():
            expected = psnr(img, pu(np.ascontiguousarray(img[..., ::-1]), scale))
            got = float(ds["psnr"].sel(variant="swaprb", scale=scale).values[i])
            assert got == pytest.approx(expected, abs=1e-9) or got == expected == np.inf
