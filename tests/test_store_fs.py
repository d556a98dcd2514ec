"""``store/fs.py``: one ``url_to_fs``, hidden credentials, atomic JSON, and deletion by proof.

The command-level cases (``--overwrite`` on SRC, on S3, on symbolic links) are in
``test_nothing_lost.py``; these pin the module's own rules on real folders and fsspec's
in-memory filesystem.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import zarr

from pupsnr_dask.store import fs as sfs


def _store(path, kind: str | None) -> None:
    """A real Zarr group with one small array, and ``pupsnr_kind`` when ``kind`` is given."""
    group = zarr.open_group(str(path), mode="w")
    if kind:
        group.attrs["pupsnr_kind"] = kind
    group.create_array("a", shape=(4,), chunks=(2,), dtype="u1")[:] = 1


def test_storage_options_hide_credentials_in_repr_and_pickle_round_trip():
    options = sfs.StorageOptions(
        key="AKIA-ID",
        secret="s3cr3t",
        client_kwargs={"endpoint_url": "http://me:pw@127.0.0.1:9000", "aws_session_token": "t"},
    )
    shown = repr(options) + str(options)
    for secret in ("AKIA-ID", "s3cr3t", ":pw@", "'t'"):
        assert secret not in shown
    assert "127.0.0.1:9000" in shown
    back = pickle.loads(pickle.dumps(options))  # the way options travel to workers
    assert type(back) is sfs.StorageOptions and dict(back) == dict(options)


@pytest.mark.parametrize(
    ("arg", "hidden"),
    [
        ('{"secret": "abc", "endpoint_url": "http://h"}', "abc"),
        ('{"secret": "abc", ', "abc"),  # not valid JSON: all of it hidden
        ("--aws-secret-access-key=abc", "abc"),
        ("s3://me:abc@bucket/x", "abc"),
    ],
)
def test_redact_arg_hides_each_kind_of_credential(arg, hidden):
    assert hidden not in sfs.redact_arg(arg)


def test_redact_argv_hides_the_storage_options_value_whatever_it_is():
    argv = ["pupsnr", "run", "--storage-options", "plain-secret", "s3://b/d.zarr"]
    assert sfs.redact_argv(argv) == ["pupsnr", "run", "--storage-options", "***", "s3://b/d.zarr"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"key": "hunter2"', "not valid JSON"),
        ('["hunter2"]', "a JSON list"),
        ("[" * 100_000 + '"hunter2"', "nested too deeply"),
    ],
)
def test_parse_storage_options_errors_never_repeat_the_text(text, message):
    with pytest.raises(ValueError, match=message) as err:
        sfs.parse_storage_options(text)
    assert "hunter2" not in str(err.value)


def test_write_json_is_atomic_and_read_json_tolerates_damage(tmp_path):
    url = str(tmp_path / "j" / "plan.json")
    sfs.write_json(url, {"a": [1, 2], "nan": float("nan")})
    assert sorted(os.listdir(tmp_path / "j")) == ["plan.json"]  # no temporary left behind
    back = sfs.read_json(url)
    assert back["a"] == [1, 2] and back["nan"] != back["nan"]
    (tmp_path / "j" / "plan.json").write_bytes(b'{"a": [1, 2')  # truncated
    assert sfs.read_json(url) is None
    assert sfs.read_json(str(tmp_path / "missing.json")) is None


def test_write_json_on_an_object_store_filesystem():
    url = "memory://pupsnr-test-fs/plan.json"
    sfs.write_json(url, {"n": 3})
    assert sfs.read_json(url) == {"n": 3}
    assert sfs.list_names("memory://pupsnr-test-fs") == ["plan.json"]
    assert sfs.list_names("memory://pupsnr-test-fs-missing") == []


def test_relation_resolves_symbolic_links_and_dots(tmp_path):
    (tmp_path / "photos").mkdir()
    os.symlink(tmp_path / "photos", tmp_path / "link")
    assert sfs.relation(str(tmp_path / "link"), str(tmp_path / "photos")) == "same"
    assert sfs.relation(str(tmp_path / "link" / "x.zarr"), str(tmp_path / "photos")) == "inside"
    assert sfs.relation(str(tmp_path), str(tmp_path / "link")) == "above"
    assert sfs.relation(str(tmp_path / "photos2"), str(tmp_path / "photos")) is None
    assert sfs.relation("memory://b/photos", str(tmp_path / "photos")) is None


def test_check_output_refuses_the_input_and_its_journal(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for output in (src, src / "d.zarr", tmp_path):
        with pytest.raises(ValueError, match="input of this command"):
            sfs.check_store_output(
                str(output), str(src), output_name="STORE", source_name="SRC", overwrite=False
            )
    sfs.check_store_output(  # next to SRC: fine
        str(tmp_path / "d.zarr"), str(src), output_name="STORE", source_name="SRC", overwrite=True
    )


def test_remove_store_deletes_a_store_of_its_kind_file_by_file(tmp_path):
    store = tmp_path / "d.zarr"
    _store(store, "images")
    assert sfs.stored_kind(str(store)) == "images"
    assert sfs.why_not_removable(str(store), "images") is None
    sfs.remove_store(str(store), kind="images")
    assert not store.exists()
    sfs.remove_store(str(store), kind="images")  # nothing there: nothing to do


@pytest.mark.parametrize(
    ("make", "why"),
    [
        ("other-kind", "is a pupsnr 'results' store, not a 'images' one"),
        ("no-kind", "is not a pupsnr 'images' store"),
        ("user-file", "holds files that are not part of a Zarr store"),
        ("plain-folder", "is not a pupsnr 'images' store"),
        ("link", "holds a symbolic link"),
        ("file", "is a file, not a store"),
    ],
)
def test_remove_store_refuses_what_it_cannot_prove_it_wrote(tmp_path, make, why):
    store = tmp_path / "d.zarr"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    if make == "other-kind":
        _store(store, "results")
    elif make == "no-kind":
        _store(store, None)
    elif make == "user-file":
        _store(store, "images")
        (store / "notes.txt").write_text("mine")
    elif make == "plain-folder":
        store.mkdir()
        (store / "holiday.jpg").write_bytes(b"\xff\xd8")
    elif make == "link":
        _store(store, "images")
        os.symlink(outside, store / "a" / "link")
    else:
        store.write_text("a file")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert sfs.why_not_removable(str(store), "images").startswith(why)
    with pytest.raises(sfs.NotOursError, match="pupsnr deletes only what it wrote"):
        sfs.remove_store(str(store), kind="images")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert outside.read_text() == "keep me"


def test_remove_store_with_ours_takes_a_store_without_its_kind_yet(tmp_path):
    store = tmp_path / "d.zarr"
    _store(store, None)  # created by us, killed before the attributes were written
    sfs.remove_store(str(store), kind="images", ours=True)
    assert not store.exists()


def test_remove_store_on_an_object_store_never_expands_patterns():
    base = "memory://pupsnr-test-glob"
    for name in ("r[1].zarr", "r1.zarr"):
        _store(f"{base}/{name}", "results")
    sfs.remove_store(f"{base}/r[1].zarr", kind="results")
    assert sfs.list_names(base) == ["r1.zarr"]
    assert (
        json.loads(
            sfs.url_to_fs(f"{base}/r1.zarr/zarr.json")[0].cat_file(f"{base}/r1.zarr/zarr.json")
        )["attributes"]["pupsnr_kind"]
        == "results"
    )
