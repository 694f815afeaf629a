"""Resolving a hub file or a URL: size, sha256, commit, where to GET, and clear errors."""

from __future__ import annotations

import hashlib

import pytest

from models_app.transfer import (
    FileNotFound,
    GatedRepo,
    HfFile,
    InvalidSource,
    RepoNotFound,
    RevisionNotFound,
    TransientError,
    Unauthorized,
    download_hf_file,
    resolve_hf_file,
    resolve_url,
)
from tests.transfer.conftest import REPO, hf


def test_it_resolves_an_lfs_file_to_the_cdn_with_size_sha256_and_commit(hub, repo, payload):
    remote = resolve_hf_file(hf(hub, "tiny-Q8_0.gguf"))

    assert remote.url.startswith(f"{hub.cdn_url}/cdn/")
    assert remote.size == len(payload)
    assert remote.sha256 == hashlib.sha256(payload).hexdigest()
    assert remote.commit == repo.commit
    assert remote.etag is None  # the hub's ETag names the blob, not the CDN's copy


def test_it_resolves_a_small_file_served_by_the_hub_itself(hub, repo):
    remote = resolve_hf_file(hf(hub, "README.md"))

    assert remote.url == f"{hub.url}/{REPO}/resolve/main/README.md"
    assert remote.size == len(b"# tiny\n")
    assert remote.sha256 is None  # a git blob id is not a sha256
    assert remote.etag == f'"{repo.files["README.md"].git_oid}"'


def test_the_token_goes_to_the_hub_but_never_to_the_cdn(hub, repo, options, tmp_path):
    hub.grant("hf_reader", REPO)

    lfs = resolve_hf_file(hf(hub, "tiny-Q8_0.gguf", token="hf_reader"))
    small = resolve_hf_file(hf(hub, "README.md", token="hf_reader"))
    download_hf_file(hf(hub, "tiny-Q8_0.gguf", token="hf_reader"), tmp_path / "m.gguf", options)

    assert hub.requests("hub")[0].headers["authorization"] == "Bearer hf_reader"
    assert "Authorization" not in lfs.headers
    assert small.headers["Authorization"] == "Bearer hf_reader"
    (get,) = hub.requests("cdn")
    assert "authorization" not in get.headers


def test_the_token_is_not_in_the_repr(hub):
    assert "hf_secret" not in repr(hf(hub, "x.gguf", token="hf_secret"))


def test_it_uses_hf_endpoint_from_the_environment_when_no_endpoint_is_given(hub, repo, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)

    remote = resolve_hf_file(HfFile(REPO, "tiny-Q8_0.gguf"))

    assert remote.commit == repo.commit


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision"),
    [
        ("acme/../etc", "x.gguf", "main"),
        ("acme/a/b", "x.gguf", "main"),
        ("-acme/x", "x.gguf", "main"),
        (REPO, "../x.gguf", "main"),
        (REPO, "/etc/passwd", "main"),
        (REPO, "a//b.gguf", "main"),
        (REPO, "x.gguf", ""),
        (REPO, "x.gguf", "main\n"),
    ],
)
def test_it_refuses_malformed_sources_before_any_request(hub, repo_id, filename, revision):
    with pytest.raises(InvalidSource):
        HfFile(repo_id, filename, revision, endpoint=hub.url)
    assert hub.requests() == []


def test_a_missing_repo_is_reported_as_such(hub, repo):
    with pytest.raises(
        RepoNotFound, match=r"acme/nothing-here: x\.gguf @ main: repository not found"
    ):
        resolve_hf_file(hf(hub, "x.gguf", repo_id="acme/nothing-here"))


def test_a_missing_file_is_reported_as_such(hub, repo):
    with pytest.raises(FileNotFound, match=r"nope\.gguf @ main: file not found at this revision"):
        resolve_hf_file(hf(hub, "nope.gguf"))


def test_a_missing_revision_is_reported_as_such(hub, repo):
    with pytest.raises(RevisionNotFound, match="@ v9: revision not found"):
        resolve_hf_file(hf(hub, "tiny-Q8_0.gguf", revision="v9"))


def test_a_private_repo_without_a_token_says_a_token_may_be_needed(hub, payload):
    hub.add_repo("acme/private", {"m.gguf": payload}, private=True)

    with pytest.raises(RepoNotFound, match="or it is private: give a token"):
        resolve_hf_file(hf(hub, "m.gguf", repo_id="acme/private"))


def test_a_private_repo_resolves_with_a_granted_token(hub, payload):
    hub.add_repo("acme/private", {"m.gguf": payload}, private=True)
    hub.grant("hf_reader", "acme/private")

    remote = resolve_hf_file(hf(hub, "m.gguf", repo_id="acme/private", token="hf_reader"))

    assert remote.size == len(payload)


def test_a_gated_repo_without_a_token_is_unauthorized(hub, payload):
    hub.add_repo("acme/gated", {"m.gguf": payload}, gated=True)

    with pytest.raises(GatedRepo, match="gated; accept its conditions on the hub, then give"):
        resolve_hf_file(hf(hub, "m.gguf", repo_id="acme/gated"))


def test_a_gated_repo_with_a_token_lacking_access_is_unauthorized(hub, payload):
    hub.add_repo("acme/gated", {"m.gguf": payload}, gated=True)
    hub.grant("hf_other")

    with pytest.raises(GatedRepo, match="with the account of this token"):
        resolve_hf_file(hf(hub, "m.gguf", repo_id="acme/gated", token="hf_other"))


def test_an_invalid_token_is_refused(hub, repo):
    with pytest.raises(Unauthorized, match="HTTP 401; the token was refused") as caught:
        resolve_hf_file(hf(hub, "tiny-Q8_0.gguf", token="hf_wrong"))
    assert not isinstance(caught.value, GatedRepo)


def test_a_hub_server_error_is_transient(hub, repo):
    hub.faults.head_fail_times = 1

    with pytest.raises(TransientError, match="HTTP 500"):
        resolve_hf_file(hf(hub, "tiny-Q8_0.gguf"))


def test_an_unreachable_hub_is_transient():
    with pytest.raises(TransientError):
        resolve_hf_file(HfFile(REPO, "x.gguf", endpoint="http://127.0.0.1:9"))


def test_a_plain_url_resolves_with_head_and_follows_redirects(hub, repo, payload):
    remote = resolve_url(f"{hub.url}/{REPO}/resolve/main/tiny-Q8_0.gguf")

    assert remote.url.startswith(f"{hub.cdn_url}/cdn/")
    assert remote.size == len(payload)
    assert remote.sha256 == hashlib.sha256(payload).hexdigest()  # X-Linked-Etag on the way
    assert remote.etag == repo.files["tiny-Q8_0.gguf"].cdn_etag
    assert remote.label == f"{hub.url}/{REPO}/resolve/main/tiny-Q8_0.gguf"


def test_a_plain_url_that_is_not_http_is_refused():
    with pytest.raises(InvalidSource):
        resolve_url("file:///etc/passwd")


def test_a_plain_url_that_is_missing_is_not_found(hub):
    with pytest.raises(Exception, match=r"not found \(HTTP 404\)"):
        resolve_url(f"{hub.cdn_url}/cdn/{'0' * 64}")
