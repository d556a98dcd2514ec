"""store/journal.py: the one journal of ingest and run, on real files."""

from __future__ import annotations

import json

import pytest

from pupsnr_dask.store.fs import partial_path
from pupsnr_dask.store.journal import (
    PLAN_VERSION,
    IngestBase,
    IngestParams,
    IngestPlan,
    RunPlan,
    done_units,
    forget,
    mark_done,
    other_parameters,
    read_plan,
    start_partial,
    write_plan,
)

INGEST = IngestPlan(IngestParams("/src", 32, 0.995, 3), ("a.png", "b.png"), IngestBase(4, 5, 1))
RUN = RunPlan("/d.zarr", 7, "ab" * 32, ("true", "gray"), (1, 2), "moments")


@pytest.mark.parametrize("plan", [INGEST, RUN], ids=["ingest", "run"])
def test_a_plan_written_is_read_back_equal_and_another_version_is_not(tmp_path, plan):
    store = str(tmp_path / "s.zarr")
    start_partial(store, "images" if plan is INGEST else "psnr")
    write_plan(store, plan)
    doc = read_plan(store)
    assert doc["version"] == PLAN_VERSION
    assert type(plan).from_json(doc) == plan
    assert type(plan).from_json({**doc, "version": PLAN_VERSION + 1}) is None
    assert type(plan).from_json({"version": PLAN_VERSION}) is None
    assert type(plan).from_json("not a plan") is None


def test_the_ingest_plan_keeps_the_json_keys_older_journals_have():
    doc = json.loads(json.dumps(INGEST.to_json()))
    assert set(doc) == {"version", "params", "files", "base"}
    assert doc["params"] == {"src": "/src", "size": 32, "threshold": 0.995, "chunk_size": 3}


def test_units_count_as_done_only_with_the_marker_they_expect(tmp_path):
    store = str(tmp_path / "r.zarr")
    start_partial(store, "psnr")
    mark_done(store, 0, {"start": 0, "stop": 4})
    mark_done(store, 1, {"start": 4, "stop": 6})
    expected = {0: {"start": 0, "stop": 4}, 1: {"start": 4, "stop": 8}, 2: {"start": 8, "stop": 9}}
    assert done_units(store, expected) == {0}
    forget(store, kind="psnr")
    assert not (tmp_path / "r.zarr.partial").exists()
    assert done_units(store, expected) == set()


def test_one_message_for_an_interrupted_writer_with_other_parameters(tmp_path):
    store = str(tmp_path / "s.zarr")
    journal = RunPlan("/d.zarr", 7, "ab" * 32, ("true",), (1, 2), "moments")
    err = other_parameters(store, "run", RUN.changed(journal))
    assert str(err) == (
        f"{partial_path(store)!r} holds an interrupted run with other parameters "
        "(variants=('true',)): rerun it with those to finish it, or use --overwrite to discard it"
    )
