"""The journal of unfinished work on a store: ``STORE.partial/``.

``STORE.partial`` holds a plan and one record per finished task; its marker
:data:`PARTIAL_MARKER` is written first and deleted last, so that what is left of an interrupted
writer is always provably pupsnr's (and may be deleted). Durable moments of a writer are logged
on the ``pupsnr_dask.journal`` logger (:func:`durable_moment`).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pupsnr_dask.schema import KIND_ATTR, StoreKind
from pupsnr_dask.store.fs import (
    NotOursError,
    _delete,
    _fs,
    _refusal,
    _Tree,
    _tree,
    _why_not_store,
    list_names,
    partial_path,
    read_json,
    remove_store,
    write_json,
)

#: The logger of durable moments (a plan written, a unit done, a store finalized).
LOGGER = logging.getLogger("pupsnr_dask.journal")
#: The ``extra=`` key naming a durable moment in its log record.
EVENT = "pupsnr_event"


def durable_moment(name: str) -> None:
    """Log that the durable moment ``name`` was reached (``ingest:planned``, ``run:unit:3``...).

    A debug record on :data:`LOGGER` whose attribute :data:`EVENT` is ``name``: with logging
    on, it shows how far an interrupted writer got; the resume tests kill the process there.
    """
    LOGGER.debug("durable moment %s", name, extra={EVENT: name})


#: The file that marks ``STORE.partial`` as pupsnr's journal: written first, deleted last.
PARTIAL_MARKER = "pupsnr.json"


#: What a pupsnr journal folder may hold at its top level (and ``*.json.tmp-*`` files).
PARTIAL_ENTRIES = frozenset(
    {PARTIAL_MARKER, "plan.json", "final.json", "records", "pixels", "done"}
)


def _why_not_partial(
    store: str, tree: _Tree, kind: StoreKind, storage_options: dict[str, Any] | None
) -> str | None:
    if tree.is_file:
        return "is a file, not a pupsnr journal"
    if tree.links:
        return f"holds a symbolic link ({tree.links[0]!r})"
    if not tree.files:
        return None
    tops = {key.split("/", 1)[0] for key in [*tree.files, *tree.dirs]}
    odd = sorted(t for t in tops if t not in PARTIAL_ENTRIES and ".json.tmp-" not in t)
    if odd:
        return f"holds {odd[0]!r}, which pupsnr never writes there"
    partial = partial_path(store)
    marker = read_json(f"{partial}/{PARTIAL_MARKER}", storage_options)
    if isinstance(marker, dict) and marker.get(KIND_ATTR) == kind:
        return None
    plan = read_json(
        f"{partial}/plan.json", storage_options
    )  # written by older versions, no marker
    if isinstance(plan, dict) and set(_PLAN_KEYS[kind]) <= set(plan):
        return None
    return f"holds no pupsnr {kind!r} journal ({PARTIAL_MARKER} or plan.json)"


_PLAN_KEYS: dict[str, tuple[str, ...]] = {
    "images": ("version", "params", "files", "base"),
    "psnr": ("version", "images_store", "n_images", "sources_sha256"),
}


def partial_is_ours(
    store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None
) -> bool:
    """True when ``STORE.partial`` exists and is the journal of a pupsnr ingest/run of ``kind``."""
    partial = partial_path(store)
    tree = _tree(*_fs(partial, storage_options))
    return tree is not None and _why_not_partial(store, tree, kind, storage_options) is None


def remove_partial(
    store: str, storage_options: dict[str, Any] | None = None, *, kind: StoreKind, entry: str = ""
) -> None:
    """Delete ``STORE.partial`` (or its folder ``entry``) when it is pupsnr's journal of ``kind``.

    Its ``plan.json`` goes first (without a plan, leftovers are never resumed), its marker
    :data:`PARTIAL_MARKER` last (until then, what is left is still provably pupsnr's).

    Raises
    ------
    NotOursError
        When ``STORE.partial`` holds anything pupsnr does not write there.
    """
    partial = partial_path(store)
    fs, root = _fs(partial, storage_options)
    tree = _tree(fs, root)
    if tree is None:
        return
    why = _why_not_partial(store, tree, kind, storage_options)
    if why:
        raise NotOursError(_refusal(partial, why))
    if entry:
        root = f"{root}/{entry}"
        tree = _tree(fs, root)
        if tree is None:
            return
    _delete(fs, root, tree, first=("plan.json",), last=(PARTIAL_MARKER,))


def start_partial(
    store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None
) -> None:
    """Create ``STORE.partial`` with its marker (after discarding an earlier one of ours)."""
    remove_partial(store, storage_options, kind=kind)
    write_json(f"{partial_path(store)}/{PARTIAL_MARKER}", {KIND_ATTR: kind}, storage_options)


def discard(store: str, kind: StoreKind, storage_options: dict[str, Any] | None = None) -> None:
    """``--overwrite``: delete the store of ``kind`` and its journal, after checking both.

    The store must be a pupsnr store of that kind (its attribute) or, when it is half
    created, its journal must be pupsnr's; the journal must be pupsnr's. Nothing is deleted
    unless both checks pass.
    """
    partial = partial_path(store)
    ptree = _tree(*_fs(partial, storage_options))
    if ptree is not None:
        why = _why_not_partial(store, ptree, kind, storage_options)
        if why:
            raise NotOursError(_refusal(partial, why))
    stree = _tree(*_fs(store, storage_options))
    if stree is not None:
        why = _why_not_store(store, stree, kind, ptree is not None, storage_options)
        if why:
            raise NotOursError(_refusal(store, why))
    remove_partial(store, storage_options, kind=kind)
    remove_store(store, storage_options, kind=kind, ours=ptree is not None)


# -- the plan of a resumable writer, and its done-unit markers --------------------------------
#: Version of every plan written to ``STORE.partial/plan.json``; another version is not resumed.
PLAN_VERSION = 1
PLAN_FILE = "plan.json"
DONE_FOLDER = "done"


@dataclass(frozen=True)
class IngestParams:
    """What an images store is fixed to for its life: where from, image size, threshold, chunks."""

    src: str
    size: int
    threshold: float
    chunk_size: int


@dataclass(frozen=True)
class IngestBase:
    """What the store held before an ingest began: images, files seen, rejections."""

    images: int = 0
    files: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class IngestPlan:
    """The plan of one ingest: its parameters, the new files (in order) and the store before."""

    params: IngestParams
    files: tuple[str, ...]
    base: IngestBase = IngestBase()
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``plan.json`` (the same keys as pupsnr 0.x wrote)."""
        return {
            "version": self.version,
            "params": asdict(self.params),
            "files": list(self.files),
            "base": asdict(self.base),
        }

    @classmethod
    def from_json(cls, doc: Any) -> IngestPlan | None:
        """The plan in ``doc``; None when it is not an ingest plan of :data:`PLAN_VERSION`."""
        try:
            if doc["version"] != PLAN_VERSION:
                return None
            return cls(
                IngestParams(**doc["params"]),
                tuple(str(f) for f in doc["files"]),
                IngestBase(**doc["base"]),
            )
        except (KeyError, TypeError):
            return None


@dataclass(frozen=True)
class RunPlan:
    """What identifies a run (or its results): images, variants, scales and method."""

    images_store: str | None
    n_images: int
    sources_sha256: str
    variants: tuple[str, ...]
    scales: tuple[int, ...]
    method: str | None
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON document of ``plan.json``."""
        return {**asdict(self), "variants": list(self.variants), "scales": list(self.scales)}

    @classmethod
    def from_json(cls, doc: Any) -> RunPlan | None:
        """The plan in ``doc``; None when it is not a run plan of :data:`PLAN_VERSION`."""
        try:
            if doc["version"] != PLAN_VERSION:
                return None
            fields = {k: doc[k] for k in cls.__dataclass_fields__}
        except (KeyError, TypeError):
            return None
        fields["variants"] = tuple(fields["variants"])
        fields["scales"] = tuple(fields["scales"])
        return cls(**fields)

    def changed(self, other: RunPlan) -> dict[str, Any]:
        """The fields (but the version) where ``other`` differs from this plan: other's values."""
        return {
            k: getattr(other, k)
            for k in self.__dataclass_fields__
            if k != "version" and getattr(self, k) != getattr(other, k)
        }


Plan = IngestPlan | RunPlan


def plan_path(store: str) -> str:
    """``STORE.partial/plan.json``."""
    return f"{partial_path(store)}/{PLAN_FILE}"


def read_plan(store: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The raw JSON of ``STORE.partial/plan.json`` (None when missing or not JSON)."""
    return read_json(plan_path(store), storage_options)


def write_plan(store: str, plan: Plan, storage_options: dict[str, Any] | None = None) -> None:
    """Write the plan atomically: from now on the writer's leftovers are resumed."""
    write_json(plan_path(store), plan.to_json(), storage_options)


def other_parameters(store: str, what: str, changed: dict[str, Any]) -> ValueError:
    """The one error for a journal left by an interrupted ``what`` with other parameters."""
    values = ", ".join(f"{k}={v!r}" for k, v in changed.items())
    return ValueError(
        f"{partial_path(store)!r} holds an interrupted {what} with other parameters ({values}): "
        "rerun it with those to finish it, or use --overwrite to discard it"
    )


def marker_path(store: str, unit: int, step: str = "") -> str:
    """``STORE.partial/done/[STEP/]UNIT.json``: the marker of a finished unit of work.

    ``step`` names a kind of unit when a writer has several (ingest: ``batch``, ``store``,
    ``unit``); run's chunks have none.
    """
    folder = f"{partial_path(store)}/{DONE_FOLDER}" + (f"/{step}" if step else "")
    return f"{folder}/{unit:08d}.json"


def mark_done(
    store: str,
    unit: int,
    doc: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
    *,
    step: str = "",
) -> None:
    """Record that ``unit`` is written (``doc`` says what it covers), after writing it."""
    write_json(marker_path(store, unit, step), doc, storage_options)


def done_units(
    store: str,
    expected: dict[int, dict[str, Any]],
    storage_options: dict[str, Any] | None = None,
    *,
    step: str = "",
) -> set[int]:
    """The units whose marker exists and records exactly ``expected[unit]``."""
    found = read_done(store, expected, storage_options, step=step)
    return {unit for unit, doc in found.items() if doc == expected[unit]}


def read_done(
    store: str,
    units: Iterable[int],
    storage_options: dict[str, Any] | None = None,
    *,
    step: str = "",
) -> dict[int, Any]:
    """The JSON documents of the markers that exist among ``units``, by unit.

    For markers that carry what a unit found, not only what it covers: the caller parses
    them into its own frozen dataclasses.
    """
    folder = posixpath.dirname(marker_path(store, 0, step))
    marked = set(list_names(folder, storage_options))
    out = {}
    for unit in units:
        if f"{unit:08d}.json" in marked:
            doc = read_json(marker_path(store, unit, step), storage_options)
            if doc is not None:
                out[unit] = doc
    return out


def forget(store: str, storage_options: dict[str, Any] | None = None, *, kind: StoreKind) -> None:
    """The writer finished: delete ``STORE.partial`` (plan first, marker last)."""
    remove_partial(store, storage_options, kind=kind)
