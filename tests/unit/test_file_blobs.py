"""The embedded backend's object store: durable whole objects under a root, nothing else."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.file_blobs import TEMPORARY_PREFIX, FileBlobStore
from shared.errors import StorageUnavailable


def test_put_get_chunks_delete(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put("dicom/s/e/i/abc.dcm", b"x" * 10)
    assert store.get("dicom/s/e/i/abc.dcm") == b"x" * 10
    assert b"".join(store.chunks("dicom/s/e/i/abc.dcm", size=3)) == b"x" * 10
    store.delete("dicom/s/e/i/abc.dcm")
    store.delete("dicom/s/e/i/abc.dcm")  # absent: nothing to do
    with pytest.raises(StorageUnavailable):
        store.get("dicom/s/e/i/abc.dcm")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        FileBlobStore(tmp_path).path(key)


def test_a_failed_stream_leaves_neither_object_nor_temporary_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)

    def chunks():
        yield b"part"
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError):
        store.put_stream("retrieve/x", chunks(), "application/octet-stream")
    assert not (tmp_path / "retrieve" / "x").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(TEMPORARY_PREFIX)]


def test_an_overwrite_replaces_whole(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put("k", b"old content")
    store.put("k", b"new")
    assert store.get("k") == b"new"


def test_presigning_needs_a_signer(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        FileBlobStore(tmp_path).presign_get("k", expires=1, content_type="t")


def test_stored_instances_are_fsynced_and_assembled_bodies_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync

    def counting(descriptor: int) -> None:
        synced.append(descriptor)
        real(descriptor)

    monkeypatch.setattr(os, "fsync", counting)
    store = FileBlobStore(tmp_path)
    store.put("dicom/1/2/3/a.dcm", b"instance")
    assert len(synced) == 6  # the parents of 4 new directories, the file, its directory
    synced.clear()
    store.put("dicom/1/2/3/b.dcm", b"instance")
    assert len(synced) == 2  # the file, then its directory after the rename
    synced.clear()
    store.put_stream("retrieve/x", iter([b"a", b"b"]), "application/octet-stream")
    assert synced == []
    assert store.get("retrieve/x") == b"ab"


_PART = st.sampled_from(["a", "b", "a-b", "a.b", "ab", "b0", "Z", "a_"])


@settings(max_examples=60, deadline=None)
@given(
    keys=st.sets(st.lists(_PART, min_size=1, max_size=3).map("/".join), max_size=12),
    prefix=st.lists(_PART, max_size=2).map("/".join) | st.sampled_from(["", "a", "a/", "b/a"]),
    after=st.lists(_PART, max_size=3).map("/".join),
)
def test_a_listing_is_every_key_under_the_prefix_after_the_marker_in_key_order(
    keys, prefix, after
) -> None:
    """Lazily, as S3 lists: the same keys, in the same order, as sorting them all."""
    with tempfile.TemporaryDirectory() as directory:
        store = FileBlobStore(Path(directory))
        stored = set()
        for key in keys:
            try:
                store.put(key, b"x")
                stored.add(key)
            except StorageUnavailable:
                continue  # a key that is also a folder of another key: not both on disk
        expected = sorted(k for k in stored if k.startswith(prefix) and k > after)
        assert [i.key for i in store.listing(prefix, after)] == expected
