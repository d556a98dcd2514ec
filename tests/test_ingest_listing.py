"""``ingest/listing.py``: what SRC holds, sorted, without walking into links or our own stores."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest
import zarr

from pupsnr_dask.ingest import listing


def _tree(root):
    for rel in ("b/2.jpg", "a/1.png", "a/sub/3.jpg", "z.jpg", "c d/ü.jpg"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_list_files_is_sorted_relative_and_slash_separated(tmp_path):
    _tree(tmp_path)
    assert listing.list_files(str(tmp_path)) == sorted(
        ["a/1.png", "a/sub/3.jpg", "b/2.jpg", "c d/ü.jpg", "z.jpg"]
    )


def test_links_to_folders_are_entries_not_walked(tmp_path):
    _tree(tmp_path)
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # would make a walk endless
    os.symlink(tmp_path / "z.jpg", tmp_path / "b" / "z-link.jpg")
    found = listing.list_files(str(tmp_path))
    assert "a/loop" in found and "b/z-link.jpg" in found
    assert not any(f.startswith("a/loop/") for f in found)


def test_stores_journals_and_their_locks_inside_src_are_skipped_and_named(tmp_path):
    _tree(tmp_path)
    zarr.open_group(str(tmp_path / "out" / "d.zarr"), mode="w").attrs["pupsnr_kind"] = "images"
    (tmp_path / "out" / "d.zarr.lock").write_text("{}")
    (tmp_path / "out" / "d.zarr.partial").mkdir()
    (tmp_path / "out" / "d.zarr.partial" / "plan.json").write_text("{}")
    (tmp_path / "out" / "notes.lock").write_text("not ours")  # no store of that name
    skipped: list[str] = []
    found = listing.list_files(str(tmp_path), skipped=skipped)
    assert skipped == ["out/d.zarr", "out/d.zarr.partial"]
    assert "out/notes.lock" in found
    assert not any(f.startswith("out/d.zarr") for f in found)
    assert listing.skipped_note(skipped) == (
        "skipped 2 Zarr stores inside SRC: out/d.zarr, out/d.zarr.partial"
    )


def test_missing_src_and_a_plain_file_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        listing.list_files(str(tmp_path / "nope"))
    (tmp_path / "f.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a folder nor an archive"):
        listing.list_files(str(tmp_path / "f.jpg"))


def _members():
    return {"a/1.png": b"1", "b/2.jpg": b"22", "z.jpg": b"333"}


@pytest.mark.parametrize("name", ["photos.zip", "photos.tar", "photos.tar.gz", "photos.TGZ"])
def test_archives_are_listed_by_their_members(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in _members().items():
                zf.writestr(member, data)
    else:
        mode = "w:gz" if name.lower().endswith(("gz", "tgz")) else "w"
        with tarfile.open(path, mode) as tf:
            for member, data in _members().items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    assert listing.list_files(str(path)) == sorted(_members())
    fs, root = listing.src_root(str(path))
    assert root == ""
    assert fs.cat_file(listing.member_path(root, "b/2.jpg")) == b"22"
    assert listing.canonical_src(str(path)) == str(path)


def test_a_tar_of_dot_lists_the_names_below_it(tmp_path):
    """``tar czf photos.tgz -C DIR .`` stores ``./a/1.png``: the sources are those of DIR."""
    import shutil

    (tmp_path / "dir").mkdir()
    for member, data in _members().items():
        (tmp_path / "dir" / member).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / member).write_bytes(data)
    made = shutil.make_archive(str(tmp_path / "photos"), "gztar", root_dir=tmp_path / "dir")
    path = tmp_path / "photos.tgz"
    os.rename(made, path)
    assert listing.list_files(str(path)) == listing.list_files(str(tmp_path / "dir"))
    fs, root = listing.src_root(str(path))
    assert fs.cat_file(listing.member_path(root, "z.jpg")) == b"333"


def _truncated_tgz(path) -> bytes:
    with tarfile.open(path, "w:gz") as tf:
        for member, data in _members().items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("photos.zip", lambda p: b"not a zip", "is not a readable archive: File is not a zip file"),
        ("photos.tar.gz", lambda p: b"junk", "is not a readable archive: Not a gzipped file"),
        ("photos.tgz", _truncated_tgz, "is not a readable archive: Compressed file ended"),
        ("photos.tar.xz", lambda p: b"junk", "is not a readable archive: "),
        (
            "photos.zip",
            lambda p: zipfile.ZipFile(p, "w").close() or p.read_bytes(),
            "no files in it",
        ),
    ],
)
def test_a_damaged_or_empty_archive_is_named_as_such(tmp_path, name, content, message):
    """Not a traceback (a BadZipFile was an internal error), nor 'SRC does not exist'."""
    from pupsnr_dask.cli import main

    path = tmp_path / name
    path.write_bytes(content(path))
    with pytest.raises(ValueError, match=f"^SRC '{path}' .*{message}"):
        listing.list_files(str(path))
    assert main(["ingest", str(path), "-o", str(tmp_path / "out.zarr"), "-q"]) == 2
    assert not (tmp_path / "out.zarr").exists()


def test_canonical_src_is_absolute(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    assert listing.canonical_src("photos") == str(tmp_path / "photos")
    assert listing.source_url("photos") == "photos"  # a folder is read as it is
