"""The background sha256 reads the file back: the same digest as hashlib, always."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from models_app.transfer.hashing import BLOCK, FileHasher


def test_it_follows_a_growing_file(tmp_path):
    data = os.urandom(3 * BLOCK + 123)
    path = tmp_path / "f"
    with FileHasher() as hasher, path.open("wb", buffering=0) as out:
        hasher.sync(path, 0)
        for offset in range(0, len(data), 1_000_000):
            out.write(data[offset : offset + 1_000_000])
            hasher.advance(min(len(data), offset + 1_000_000))

        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
        assert hasher.count == len(data)


def test_it_hashes_the_prefix_on_disk_then_continues(tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "f"
    path.write_bytes(data[:1_000_000])
    with FileHasher() as hasher:
        hasher.sync(path, 1_000_000)
        with path.open("ab") as out:
            out.write(data[1_000_000:])
        hasher.advance(len(data))

        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_file_cut_shorter_is_hashed_again_from_the_start(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old bytes")
    with FileHasher() as hasher:
        hasher.sync(path, 9)
        assert hasher.hexdigest() == hashlib.sha256(b"old bytes").hexdigest()
        path.write_bytes(b"new")
        hasher.sync(path, 0)
        hasher.advance(3)

        assert hasher.hexdigest() == hashlib.sha256(b"new").hexdigest()


def test_a_file_shorter_than_claimed_is_an_error(tmp_path):
    (tmp_path / "f").write_bytes(b"short")
    with FileHasher() as hasher:
        hasher.sync(tmp_path / "f", 100)

        with pytest.raises(OSError, match="shorter than 100 bytes"):
            hasher.hexdigest()


def test_a_read_error_wakes_a_hexdigest_that_is_already_waiting(tmp_path, monkeypatch):
    # The worker fails only after hexdigest() has started waiting: it must be woken.
    from models_app.transfer import hashing

    original = hashing.FileHasher._hash_next_block

    def late(self):
        time.sleep(0.2)
        return original(self)

    monkeypatch.setattr(hashing.FileHasher, "_hash_next_block", late)
    (tmp_path / "f").write_bytes(b"short")
    outcome: list[BaseException] = []
    with FileHasher() as hasher:
        hasher.sync(tmp_path / "f", 100)
        waiter = threading.Thread(target=_capture, args=(hasher.hexdigest, outcome), daemon=True)
        waiter.start()
        waiter.join(timeout=5)
        assert not waiter.is_alive(), "hexdigest() was never woken"
    assert isinstance(outcome[0], OSError)


def _capture(call, outcome: list[BaseException]) -> None:
    try:
        call()
    except BaseException as error:
        outcome.append(error)
