"""Real sample photographs that installed packages ship, gathered into a folder for the demo.

Sources: scikit-image's ``skimage/data`` (colour and grayscale photos), scikit-learn's
``load_sample_images`` (china.jpg, flower.jpg) and matplotlib's sample data. Grayscale ones are
included on purpose: the demo shows them being rejected by the colour test.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

#: (package, folder inside the package, file names). Files missing from a version are skipped.
SAMPLE_FILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "skimage",
        "data",
        (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "rocket.jpg",
            "hubble_deep_field.jpg",
            "ihc.png",
            "motorcycle_left.png",
            "color.png",
            "retina.jpg",
            "logo.png",
            "camera.png",
            "moon.png",
            "coins.png",
            "brick.png",
        ),
    ),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")),
)


def sample_paths() -> list[tuple[str, Path]]:
    """``(package, path)`` of each sample image available in this environment."""
    paths: list[tuple[str, Path]] = []
    for package, folder, names in SAMPLE_FILES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        base = Path(spec.origin).parent / folder
        paths.extend((package, base / name) for name in names if (base / name).is_file())
    return paths


def write_samples(dest: str | Path) -> list[Path]:
    """Copy the sample images into ``dest/<package>/``; return the copies.

    Raises
    ------
    ImportError
        When no package shipping sample images is installed.
    """
    paths = sample_paths()
    if not paths:
        raise ImportError(
            "no sample images found: install them with pip install 'pupsnr-dask[demo]'"
        )
    out = []
    for package, path in paths:
        target = Path(dest) / package / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        out.append(target)
    return out
