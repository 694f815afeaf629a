"""A split model (``name-0000N-of-0000M.gguf``) downloads as one model."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from models_app.transfer import (
    Cancelled,
    FileNotFound,
    InsufficientSpace,
    download_shards,
)
from tests.transfer.conftest import hf


def test_all_shards_download_one_after_another_at_one_commit(
    hub, repo, split_model, options, tmp_path
):
    hub.grant("hf_reader")
    source = hf(hub, "split/tiny-00002-of-00003.gguf", token="hf_reader")  # any shard will do

    results = download_shards(source, tmp_path, options)

    assert [r.path.name for r in results] == sorted(split_model)
    for result in results:
        data = split_model[result.path.name]
        assert result.path.read_bytes() == data
        assert result.sha256 == hashlib.sha256(data).hexdigest() and result.verified
    heads = hub.requests("hub", "HEAD")
    assert "/resolve/main/" in heads[0].path
    assert all(f"/resolve/{repo.commit}/" in head.path for head in heads[1:])
    assert all(results[0].path.parent == r.path.parent == tmp_path / "split" for r in results)


def test_progress_covers_the_whole_model(hub, repo, split_model, options, tmp_path) -> None:
    calls: list[tuple[int, int | None]] = []
    recording = replace(options, progress=lambda d, t: calls.append((d, t)), progress_interval=0.0)

    download_shards(hf(hub, "split/tiny-00001-of-00003.gguf"), tmp_path, recording)

    total = sum(len(data) for data in split_model.values())
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == total


def test_a_missing_shard_fails_before_anything_is_downloaded(hub, repo, options, tmp_path):
    del repo.files["split/tiny-00003-of-00003.gguf"]

    with pytest.raises(FileNotFound, match=r"tiny-00003-of-00003\.gguf @ [0-9a-f]{40}: file not"):
        download_shards(hf(hub, "split/tiny-00001-of-00003.gguf"), tmp_path, options)
    assert hub.requests("cdn") == []


def test_a_model_that_does_not_fit_is_refused_before_downloading(
    hub, repo, options, tmp_path, monkeypatch
):
    import shutil

    monkeypatch.setattr(
        shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 1000)
    )

    with pytest.raises(
        InsufficientSpace, match=r"has 0.0 MiB free; the download needs 0.4 MiB more"
    ):
        download_shards(hf(hub, "split/tiny-00001-of-00003.gguf"), tmp_path, options)
    assert hub.requests("cdn") == []


def test_an_interrupted_model_resumes_with_the_shards_already_done(
    hub, repo, split_model, options, tmp_path
):
    names = sorted(split_model)
    stop_in_second = replace(
        options,
        should_stop=lambda: (tmp_path / "split" / names[1]).with_suffix(".gguf.partial").exists(),
    )
    with pytest.raises(Cancelled):
        download_shards(hf(hub, "split/tiny-00001-of-00003.gguf"), tmp_path, stop_in_second)
    assert (tmp_path / "split" / names[0]).exists() and not (tmp_path / "split" / names[2]).exists()

    gets_before = len(hub.requests("cdn", "GET"))

    results = download_shards(hf(hub, "split/tiny-00001-of-00003.gguf"), tmp_path, options)

    assert [r.path.read_bytes() for r in results] == [split_model[n] for n in names]
    resumed = hub.requests("cdn", "GET")[gets_before:]
    assert len(resumed) == 2  # the first shard was complete: not fetched again
    assert results[0].resumed_from == len(split_model[names[0]])
