"""Pair a model's predictions with the dataset's images by relative path; no file is read."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pupsnr_dask.kernels.image import image_extension

#: How many names a report lists for each kind of mismatch.
N_EXAMPLES = 5
#: The kinds of mismatch, in the order a report lists them, with what each means.
MISMATCHES = (
    ("missing", "without a prediction"),
    ("extra", "predictions without a dataset image (ignored)"),
    ("ambiguous", "images with several candidate predictions (left out)"),
    ("unreadable", "predictions that cannot be decoded (left out)"),
    ("resized", "predictions of another size, LANCZOS-resized (kept)"),
    ("ignored", "files without an image extension (ignored)"),
)


@dataclass
class Matching:
    """How a model's outputs were paired with the dataset's images.

    Attributes
    ----------
    n_images : int
        Dataset images considered (after the split).
    pairs : list of (int, str)
        Position among those images, and the name of its prediction (a relative path in a
        folder, or a ``source`` in a store), in dataset order.
    missing, extra, ambiguous, ignored, resized, unreadable : list of str
        Dataset images with no prediction; predictions with no dataset image; dataset images
        with several candidate predictions (``"a/b.jpg <- a/b.png, a/b.webp"``); files without
        an image extension; predictions resized to the dataset's size (``"name (w x h)"``);
        predictions that could not be decoded (``"name: reason"``).
    """

    n_images: int
    pairs: list[tuple[int, str]]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def n_matched(self) -> int:
        """Images with a usable prediction."""
        return len(self.pairs)

    def lines(self) -> list[str]:
        """Human-readable report, one kind of mismatch a line, with a few names each."""
        out = [f"predictions: {self.n_matched} of {self.n_images} images matched"]
        for kind, what in MISMATCHES:
            names = getattr(self, kind)
            if names:
                out.append(f"  {kind} {len(names)}: {what}, e.g. {examples(names)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """Counts and up to :data:`N_EXAMPLES` names of each kind (JSON-ready)."""
        d = asdict(self)
        out: dict[str, Any] = {"n_images": self.n_images, "n_matched": self.n_matched}
        for key in ("missing", "extra", "ambiguous", "ignored", "resized", "unreadable"):
            out[f"n_{key}"] = len(d[key])
            out[key] = d[key][:N_EXAMPLES]
        return out


def examples(names: Sequence[str]) -> str:
    """The first :data:`N_EXAMPLES` names, and how many more there are."""
    shown = ", ".join(names[:N_EXAMPLES])
    return shown + (f", ... ({len(names) - N_EXAMPLES} more)" if len(names) > N_EXAMPLES else "")


def _stem(path: str) -> str:
    ext = image_extension(path)  # as ingest reads it: "..png" is a PNG named "."
    return path[: len(path) - len(ext)] if ext else path


def match_predictions(sources: Sequence[str], names: Sequence[str]) -> Matching:
    """Pair dataset images with predictions by relative path.

    The rule: a prediction whose name equals an image's ``source`` is its prediction. Otherwise
    a prediction with the same path up to the extension is (``a/b.jpg`` <- ``a/b.png``), when
    exactly one such prediction is left and no other unmatched image shares that stem; when
    several are, the image is reported as ambiguous and left out. Paths are case-sensitive.

    Parameters
    ----------
    sources : sequence of str
        The dataset images' ``source`` paths, in dataset order.
    names : sequence of str
        Relative paths (``/`` separators) of the predictions.

    Returns
    -------
    Matching
        Pairs in dataset order, and the images and predictions left unpaired.

    Examples
    --------
    >>> m = match_predictions(["a/x.jpg", "b.jpg", "c.jpg"], ["a/x.png", "b.jpg", "z.png"])
    >>> m.pairs, m.missing, m.extra
    ([(0, 'a/x.png'), (1, 'b.jpg')], ['c.jpg'], ['z.png'])
    """
    available = set(names)
    exact = {s for s in sources if s in available}
    candidates: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if name not in exact:
            candidates[_stem(name)].append(name)
    open_stems = Counter(_stem(s) for s in sources if s not in exact)
    matching = Matching(len(sources), [])
    taken: set[str] = set()
    for i, source in enumerate(sources):
        found = [source] if source in exact else candidates.get(_stem(source), [])
        if not found:
            matching.missing.append(source)
        elif source not in exact and (len(found) > 1 or open_stems[_stem(source)] > 1):
            matching.ambiguous.append(f"{source} <- {', '.join(sorted(found))}")
            taken.update(found)
        else:
            matching.pairs.append((i, found[0]))
            taken.add(found[0])
    matching.extra = [n for n in names if n not in taken]
    return matching
