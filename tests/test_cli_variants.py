"""`pupsnr variants`: every input and metric listed with its definition, without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
