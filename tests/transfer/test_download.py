"""Downloading one file: resume, restart, retries, clear failures, verification, cancel."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import replace

import pytest

from core.units import MIB
from models_app.transfer import (
    Cancelled,
    DownloadOptions,
    InsufficientSpace,
    NotFound,
    RangeNotSatisfiable,
    RemoteFile,
    RepoNotFound,
    TransientError,
    Unauthorized,
    VerificationFailed,
    download_hf_file,
    download_remote,
    download_url,
)
from tests.transfer.conftest import hf


def cdn_gets(hub):
    return hub.requests("cdn", "GET")


def test_it_downloads_and_verifies_a_file(hub, repo, payload, options, tmp_path):
    result = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert (tmp_path / "m.gguf").read_bytes() == payload
    assert result.sha256 == hashlib.sha256(payload).hexdigest()
    assert result.verified and result.resumed_from == 0 and result.commit == repo.commit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # no partial, no sidecar
    assert "range" not in cdn_gets(hub)[0].headers


def test_it_resumes_after_a_dropped_connection_with_a_range_request(
    hub, repo, payload, options, sleeps, tmp_path
):
    hub.faults.drop_after = 2 * MIB + 5

    result = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    first, second = cdn_gets(hub)
    assert first.body_bytes == 2 * MIB + 5 and first.range_start is None
    assert second.status == 206 and second.range_start == 2 * MIB + 5
    assert second.headers["if-range"] == repo.files["tiny-Q8_0.gguf"].cdn_etag
    assert result.sha256 == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "m.gguf").read_bytes() == payload
    assert sleeps == [1.0]


def test_a_retry_resolves_again_for_a_fresh_cdn_url(hub, repo, payload, options, tmp_path):
    hub.faults.drop_after = MIB

    def drop_and_expire(*_):
        hub.expire_cdn_urls()  # the first signed URL no longer works

    retry = replace(options.retry, sleep=drop_and_expire)
    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", replace(options, retry=retry))

    heads = [r for r in hub.requests("hub", "HEAD")]
    assert len(heads) == 2
    assert heads[1].path.startswith(f"/acme/tiny-GGUF/resolve/{repo.commit}/")  # pinned
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_it_resumes_from_a_partial_file_left_on_disk(hub, repo, payload, options, tmp_path):
    (tmp_path / "m.gguf.partial").write_bytes(payload[: 3 * MIB])

    result = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    (get,) = cdn_gets(hub)
    assert get.range_start == 3 * MIB and get.body_bytes == len(payload) - 3 * MIB
    assert result.resumed_from == 3 * MIB
    assert result.sha256 == hashlib.sha256(payload).hexdigest()  # prefix re-hashed from disk
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_a_complete_partial_file_is_verified_without_downloading(
    hub, repo, payload, options, tmp_path
):
    (tmp_path / "m.gguf.partial").write_bytes(payload)

    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert cdn_gets(hub) == []
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_a_file_already_downloaded_is_checked_not_fetched_again(
    hub, repo, payload, options, tmp_path
):
    (tmp_path / "m.gguf").write_bytes(payload)
    (tmp_path / "other.gguf").write_bytes(payload[::-1])  # right size, wrong bytes

    kept = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)
    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "other.gguf", options)

    assert kept.resumed_from == len(payload) and kept.verified
    assert len(cdn_gets(hub)) == 1  # only other.gguf, whose sha256 did not match
    assert (tmp_path / "other.gguf").read_bytes() == payload


def test_a_partial_file_of_another_version_is_discarded(hub, repo, payload, options, tmp_path):
    (tmp_path / "m.gguf.partial").write_bytes(b"old" * 1000)
    meta = {"sha256": "ab" * 32, "size": len(payload), "etag": '"old"'}
    (tmp_path / "m.gguf.partial.json").write_text(json.dumps(meta))

    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert cdn_gets(hub)[0].range_start is None
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_it_starts_over_when_the_server_ignores_range(hub, repo, payload, options, tmp_path):
    (tmp_path / "m.gguf.partial").write_bytes(b"\0" * (2 * MIB))  # wrong bytes: must not stay
    hub.faults.ignore_range = True

    result = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    (get,) = cdn_gets(hub)
    assert get.range_start == 2 * MIB and get.status == 200
    assert result.sha256 == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_a_206_for_another_range_than_asked_starts_the_file_over(
    hub, repo, payload, options, sleeps, tmp_path
):
    (tmp_path / "m.gguf.partial").write_bytes(payload[: 2 * MIB])
    hub.faults.range_shift = 1000

    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    shifted, fresh = cdn_gets(hub)
    assert shifted.range_start == 2 * MIB and shifted.status == 206
    assert fresh.range_start is None and fresh.status == 200
    assert sleeps == [1.0]
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_it_starts_over_when_the_file_changed_since_the_partial_was_written(
    hub, repo, payload, options, tmp_path
):
    """If-Range: the server sends the whole new file rather than a splice of two."""
    new = payload[::-1]
    hub.put_file(repo.repo_id, "tiny-Q8_0.gguf", new)
    blob = repo.files["tiny-Q8_0.gguf"]
    url = resolve_cdn_url(hub, repo)
    (tmp_path / "m.gguf.partial").write_bytes(payload[:MIB])
    (tmp_path / "m.gguf.partial.json").write_text(json.dumps({"etag": '"cdn-old"'}))

    result = download_remote(RemoteFile(url, "test"), tmp_path / "m.gguf", options)

    (get,) = cdn_gets(hub)
    assert get.headers["if-range"] == '"cdn-old"' and get.status == 200
    assert result.sha256 == blob.sha256 and not result.verified
    assert (tmp_path / "m.gguf").read_bytes() == new


def resolve_cdn_url(hub, repo):
    from models_app.transfer import resolve_hf_file

    return resolve_hf_file(hf(hub, "tiny-Q8_0.gguf")).url


def test_it_retries_server_errors_with_growing_delays_then_succeeds(
    hub, repo, payload, options, sleeps, tmp_path
):
    hub.faults.fail_times = 3

    result = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert [r.status for r in cdn_gets(hub)] == [500, 500, 500, 200]
    assert sleeps == [1.0, 2.0, 4.0]
    assert result.sha256 == hashlib.sha256(payload).hexdigest()


def test_it_honours_retry_after(hub, repo, options, sleeps, tmp_path):
    hub.faults.fail_times, hub.faults.fail_status, hub.faults.retry_after = 1, 503, 7

    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert sleeps == [7.0]


def test_it_gives_up_after_the_allowed_attempts(hub, repo, options, sleeps, tmp_path):
    hub.faults.fail_times = 10

    with pytest.raises(TransientError, match=r"HTTP 500\) \(gave up after 4 attempts in a row\)"):
        download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert len(cdn_gets(hub)) == 4 and sleeps == [1.0, 2.0, 4.0]


def test_drops_that_make_progress_do_not_use_up_the_attempts(hub, repo, payload, options, tmp_path):
    hub.faults.drop_after, hub.faults.drops = MIB, 5  # more drops than attempts (4)

    download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert len(cdn_gets(hub)) == 6
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_it_gives_up_at_once_on_a_missing_repo(hub, repo, options, sleeps, tmp_path):
    with pytest.raises(RepoNotFound, match=r"acme/gone: m\.gguf @ main: repository not found"):
        download_hf_file(hf(hub, "m.gguf", repo_id="acme/gone"), tmp_path / "m.gguf", options)
    assert sleeps == [] and len(hub.requests()) == 1


def test_it_gives_up_at_once_when_the_cdn_refuses_access(hub, repo, options, sleeps, tmp_path):
    url = resolve_cdn_url(hub, repo)
    hub.expire_cdn_urls()

    with pytest.raises(Unauthorized, match=r"access refused \(HTTP 403; no token was given\)"):
        download_remote(RemoteFile(url, "the model"), tmp_path / "m.gguf", options)
    assert sleeps == []


def test_it_gives_up_at_once_on_a_url_that_is_not_found(hub, options, sleeps, tmp_path):
    with pytest.raises(NotFound, match=r"not found \(HTTP 404\)"):
        download_url(f"{hub.url}/nothing.gguf", tmp_path / "m.gguf", options=options)
    assert sleeps == []


def test_wrong_bytes_fail_verification_and_delete_the_partial_file(
    hub, repo, payload, options, tmp_path
):
    hub.faults.corrupt_offset = 4 * MIB + 1
    expected = hashlib.sha256(payload).hexdigest()

    with pytest.raises(VerificationFailed, match=f"sha256 mismatch: expected {expected}, got "):
        download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)

    assert list(tmp_path.iterdir()) == []


def test_a_file_of_the_wrong_size_fails_verification(hub, repo, payload, options, tmp_path):
    url = resolve_cdn_url(hub, repo)
    remote = RemoteFile(url, "the model", size=len(payload) + 1)

    with pytest.raises(VerificationFailed, match=f"expected {len(payload) + 1} bytes but"):
        download_remote(remote, tmp_path / "m.gguf", options)
    assert list(tmp_path.iterdir()) == []


def test_a_range_the_server_cannot_satisfy_is_a_clear_error(hub, repo, payload, options, tmp_path):
    url = resolve_cdn_url(hub, repo)
    (tmp_path / "m.gguf.partial").write_bytes(payload + b"extra")  # longer than the file

    with pytest.raises(RangeNotSatisfiable, match=f"reports {len(payload)} bytes"):
        download_remote(RemoteFile(url, "the model"), tmp_path / "m.gguf", options)


def test_cancelling_keeps_a_partial_file_that_a_later_call_resumes(
    hub, repo, payload, options, tmp_path
) -> None:
    hub.faults.rate = 8 * MIB  # slow enough to be mid-file when cancelled
    progress: list[int] = []
    cancelling = replace(
        options,
        progress=lambda done, total: progress.append(done),
        should_stop=lambda: bool(progress) and progress[-1] >= 2 * MIB,
        progress_interval=0.0,
    )

    with pytest.raises(Cancelled, match=r"cancelled at \d+ of \d+ bytes; the partial file is kept"):
        download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", cancelling)

    kept = (tmp_path / "m.gguf.partial").stat().st_size
    assert 2 * MIB <= kept < len(payload)
    hub.faults.rate = None
    result = download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", options)
    assert result.resumed_from == kept and cdn_gets(hub)[-1].range_start == kept
    assert (tmp_path / "m.gguf").read_bytes() == payload


def test_progress_rises_to_the_total_at_most_twice_a_second(hub, repo, payload, tmp_path) -> None:
    hub.faults.rate = 4 * MIB  # about 1.5 s for the file
    calls: list[tuple[float, int, int | None]] = []

    def record(done: int, total: int | None) -> None:
        calls.append((time.monotonic(), done, total))

    began = time.monotonic()
    download_hf_file(
        hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", DownloadOptions(progress=record)
    )

    times, done, totals = zip(*calls, strict=True)
    assert set(totals) == {len(payload)}
    assert list(done) == sorted(done) and done[-1] == len(payload)
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(times[:-1]))  # the last is forced
    took = time.monotonic() - began  # at least 1.5 s at this rate
    assert 3 <= len(calls) <= took / 0.5 + 2


def test_a_file_that_does_not_fit_is_refused_before_downloading(
    hub, repo, options, tmp_path, monkeypatch
):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, MIB))
    space = replace(options, space_margin=MIB)

    with pytest.raises(InsufficientSpace, match=r"has 1.0 MiB free; the download needs 6.0 MiB"):
        download_hf_file(hf(hub, "tiny-Q8_0.gguf"), tmp_path / "m.gguf", space)
    assert cdn_gets(hub) == []


def test_a_plain_url_downloads_and_checks_the_sha256_given(hub, repo, payload, options, tmp_path):
    url = f"{hub.url}/acme/tiny-GGUF/resolve/main/tiny-Q8_0.gguf"
    wrong = "0" * 64

    result = download_url(url, tmp_path / "m.gguf", options=options)
    with pytest.raises(VerificationFailed, match=f"expected {wrong}"):
        download_url(url, tmp_path / "again.gguf", sha256=wrong, options=options)

    assert result.verified  # the sha256 came from X-Linked-Etag on the redirect
    assert (tmp_path / "m.gguf").read_bytes() == payload
    assert not (tmp_path / "again.gguf").exists()
