"""Adding models to the catalog (``models_app.catalog``) against the local fake hub:
listing a repo, adding hub and URL models with their files and GGUF facts, refusals."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth.models import AnonymousUser

from models_app import catalog
from models_app.catalog import CatalogError
from models_app.choices import SourceKind
from models_app.gguf import load_model_facts
from models_app.models import CatalogModel
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

REPO = "acme/tiny-GGUF"
SHARDS = [f"split/big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def refusal(call, *args, **kwargs) -> CatalogError:
    with pytest.raises(CatalogError) as raised:
        call(*args, **kwargs)
    assert not CatalogModel.objects.exists()
    return raised.value


# -- listing a repo --------------------------------------------------------------------


def test_a_repo_listing_offers_split_models_as_one_and_skips_other_files(gguf_hub):
    choices = {choice.name: choice for choice in catalog.hub_models(REPO)}
    assert set(choices) == {"tiny-Q8_0.gguf", "split/big.gguf"}
    split = choices["split/big.gguf"]
    assert split.first == SHARDS[0]
    assert split.shards == 3 and split.complete
    assert split.size == sum(path.stat().st_size for path in gguf_hub.shards)
    assert choices["tiny-Q8_0.gguf"].shards == 1


def test_a_repo_listing_puts_the_largest_model_last(gguf_hub):
    sizes = [choice.size for choice in catalog.hub_models(REPO)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_a_repo_listing_marks_a_split_model_with_missing_shards_incomplete(gguf_hub):
    (choice,) = catalog.hub_models("acme/incomplete-GGUF")
    assert choice.name == "split/big.gguf"
    assert choice.shards == 2 and not choice.complete


def test_a_repo_without_gguf_files_is_not_found(gguf_hub):
    gguf_hub.hub.add_repo("acme/docs-only", {"README.md": b"nothing here"})
    error = refusal(catalog.hub_models, "acme/docs-only")
    assert error.status == 404 and "no .gguf files" in error.message


@pytest.mark.parametrize(
    ("repo", "revision", "status"),
    [("not a repo!", "main", 422), ("acme/nope", "main", 404), (REPO, "v9", 404)],
)
def test_a_repo_listing_refuses_bad_repos_and_revisions(gguf_hub, repo, revision, status):
    error = refusal(catalog.hub_models, repo, revision)
    assert (error.status, error.field) == (status, "hf_repo")


# -- adding a hub model ----------------------------------------------------------------


def test_adding_a_split_model_records_every_shard_with_its_size_and_sha256(gguf_hub):
    model = catalog.add_hf_model(REPO, SHARDS[0])
    expected = [
        {"name": name, "size": path.stat().st_size, "sha256": sha256(path.read_bytes())}
        for name, path in zip(SHARDS, gguf_hub.shards, strict=True)
    ]
    assert model.files == expected
    assert model.size_bytes == sum(entry["size"] for entry in expected)
    assert model.source_kind == SourceKind.HF
    assert (model.hf_repo, model.hf_filename, model.revision) == (REPO, SHARDS[0], "main")


def test_any_shard_adds_the_whole_split_model_by_its_first(gguf_hub):
    model = catalog.add_hf_model(REPO, SHARDS[2])
    assert model.hf_filename == SHARDS[0]
    assert [entry["name"] for entry in model.files] == SHARDS


def test_a_split_models_facts_come_from_all_of_its_shards_headers(gguf_hub):
    model = catalog.add_hf_model(REPO, SHARDS[0])
    local = load_model_facts(str(gguf_hub.shards[0]))
    assert model.architecture == "llama"
    assert model.context_length == 4096
    assert model.parameter_count == local.parameter_count > 0
    assert len(model.model_facts.shards) == 3
    assert model.model_facts.block_count == 4


def test_a_single_file_model_records_its_quantization_and_context(gguf_hub):
    model = catalog.add_hf_model(REPO, "tiny-Q8_0.gguf")
    assert model.files == [
        {
            "name": "tiny-Q8_0.gguf",
            "size": gguf_hub.single.stat().st_size,
            "sha256": sha256(gguf_hub.single.read_bytes()),
        }
    ]
    assert (model.architecture, model.quantization, model.context_length) == ("llama", "Q8_0", 2048)
    assert model.display_name == "tiny-GGUF · tiny-Q8_0"


def test_a_hub_model_is_pinned_to_the_commit_its_revision_pointed_to(gguf_hub):
    commit = gguf_hub.hub.repos[REPO].commit
    model = catalog.add_hf_model(REPO, "tiny-Q8_0.gguf")
    gguf_hub.hub.put_file(REPO, "other.gguf", b"a later commit")
    model.refresh_from_db()
    assert model.commit == commit != gguf_hub.hub.repos[REPO].commit
    assert model.revision == "main"
    # the header the facts came from was read at that commit, not at the moving branch
    reads = [r.path for r in gguf_hub.hub.requests("hub", "GET") if "/resolve/" in r.path]
    assert reads and all(f"/resolve/{commit}/" in path for path in reads)


def test_the_display_name_and_the_user_who_added_it_are_kept(gguf_hub):
    user = UserFactory()
    model = catalog.add_hf_model(REPO, "tiny-Q8_0.gguf", "main", user, "  Tiny chat  ")
    assert model.display_name == "Tiny chat"
    assert model.created_by == user


def test_an_anonymous_user_is_not_recorded_as_the_creator(gguf_hub):
    model = catalog.add_hf_model(REPO, "tiny-Q8_0.gguf", user=AnonymousUser())
    assert model.created_by is None


def test_a_gated_repo_with_an_accepted_token_can_be_added(gguf_hub, monkeypatch):
    gguf_hub.hub.grant("hf_accepted", "acme/gated-GGUF")
    monkeypatch.setenv("HF_TOKEN", "hf_accepted")
    model = catalog.add_hf_model("acme/gated-GGUF", "gated.gguf")
    assert model.architecture == "llama"


@pytest.mark.parametrize(
    ("repo", "filename", "revision", "status", "field"),
    [
        ("not a repo!", "tiny-Q8_0.gguf", "main", 422, "hf_repo"),
        ("acme/nope", "tiny-Q8_0.gguf", "main", 404, "hf_repo"),
        (REPO, "nope.gguf", "main", 404, "hf_file"),
        (REPO, "README.md", "main", 404, "hf_file"),
        (REPO, "tiny-Q8_0.gguf", "v9", 404, "hf_repo"),
        ("acme/gated-GGUF", "gated.gguf", "main", 403, "hf_repo"),
        ("acme/incomplete-GGUF", "split/big-00001-of-00003.gguf", "main", 422, "hf_file"),
    ],
)
def test_a_hub_model_that_cannot_be_added_says_why(
    gguf_hub, repo, filename, revision, status, field
):
    error = refusal(catalog.add_hf_model, repo, filename, revision)
    assert (error.status, error.field) == (status, field), error.message


def test_a_split_model_missing_a_shard_names_the_missing_shard(gguf_hub):
    error = refusal(catalog.add_hf_model, "acme/incomplete-GGUF", "split/big.gguf")
    assert "split/big-00002-of-00003.gguf" in error.message


@pytest.mark.parametrize(
    ("repo", "filename", "field"), [("", "a.gguf", "hf_repo"), (REPO, " ", "hf_file")]
)
def test_a_hub_model_needs_a_repo_and_a_file_before_the_hub_is_asked(
    gguf_hub, repo, filename, field
):
    error = refusal(catalog.add_hf_model, repo, filename)
    assert (error.status, error.field, error.message) == (422, field, "This field is required.")
    assert gguf_hub.hub.requests() == []


def test_the_same_model_twice_is_a_conflict_naming_the_first(gguf_hub):
    first = catalog.add_hf_model(REPO, SHARDS[0])
    with pytest.raises(CatalogError) as raised:
        catalog.add_hf_model(f" {REPO} ", SHARDS[1], "")
    assert raised.value.status == 409
    assert raised.value.existing == first
    assert CatalogModel.objects.count() == 1


def test_the_same_file_at_another_revision_is_another_model(gguf_hub):
    commit = gguf_hub.hub.repos[REPO].commit
    catalog.add_hf_model(REPO, "tiny-Q8_0.gguf")
    pinned = catalog.add_hf_model(REPO, "tiny-Q8_0.gguf", commit)
    assert pinned.revision == commit
    assert CatalogModel.objects.count() == 2


# -- adding a URL model ----------------------------------------------------------------


def test_a_url_model_records_its_file_size_sha256_and_facts(gguf_hub):
    url = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf")
    model = catalog.add_url_model(url, UserFactory())
    data = gguf_hub.single.read_bytes()
    assert model.source_kind == SourceKind.URL and model.url == url
    assert model.files == [{"name": "tiny-Q8_0.gguf", "size": len(data), "sha256": sha256(data)}]
    assert model.size_bytes == len(data)
    assert (model.architecture, model.context_length) == ("llama", 2048)
    assert model.display_name == "tiny-Q8_0"
    assert model.hf_repo == "" and model.commit == ""


def test_a_sha256_given_for_a_url_model_is_kept_lowercase(gguf_hub):
    given = "AB" * 32
    url = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf")
    model = catalog.add_url_model(url, display_name="Pinned", sha256=f" {given} ")
    assert model.files[0]["sha256"] == given.lower()
    assert model.display_name == "Pinned"


@pytest.mark.parametrize("given", ["abc", "z" * 64, "a" * 63])
def test_a_sha256_that_is_not_64_hex_digits_is_refused(gguf_hub, given):
    url = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf")
    error = refusal(catalog.add_url_model, url, sha256=given)
    assert (error.status, error.field) == (422, "sha256")
    assert gguf_hub.hub.requests() == []


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("  ", 422),
        ("https://example.org/model.bin", 422),
        ("ftp://example.org/model.gguf", 422),
        ("{hub}/acme/tiny-GGUF/resolve/main/nope.gguf", 404),
    ],
)
def test_a_url_model_that_cannot_be_added_says_why(gguf_hub, url, status):
    error = refusal(catalog.add_url_model, url.format(hub=gguf_hub.hub.url))
    assert (error.status, error.field) == (status, "url")


def test_the_same_url_twice_is_a_conflict_naming_the_first(gguf_hub):
    url = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf")
    first = catalog.add_url_model(url)
    with pytest.raises(CatalogError) as raised:
        catalog.add_url_model(f"  {url}\n", display_name="again")
    assert (raised.value.status, raised.value.existing) == (409, first)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
