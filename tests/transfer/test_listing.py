"""Listing a repo's GGUF models: shards grouped into one model, sizes and sha256."""

from __future__ import annotations

import hashlib

import pytest

from models_app.transfer import (
    GgufModel,
    RepoFileInfo,
    RepoNotFound,
    RevisionNotFound,
    group_gguf_files,
    list_gguf_models,
)
from tests.transfer.conftest import REPO
from tests.transfer.fakehub import FakeHub


def test_it_lists_single_files_and_split_models_as_one_each(hub, repo, payload, split_model):
    models = {model.name: model for model in list_gguf_models(REPO, endpoint=hub.url)}

    assert sorted(models) == ["split/tiny.gguf", "tiny-Q8_0.gguf"]
    single = models["tiny-Q8_0.gguf"]
    assert single.files == (
        RepoFileInfo("tiny-Q8_0.gguf", len(payload), hashlib.sha256(payload).hexdigest()),
    )
    split = models["split/tiny.gguf"]
    assert [info.path for info in split.files] == [f"split/{n}" for n in sorted(split_model)]
    assert split.size == sum(len(data) for data in split_model.values())
    assert split.complete


def test_a_split_model_with_a_missing_shard_is_listed_as_incomplete(hub, repo):
    del repo.files["split/tiny-00002-of-00003.gguf"]

    (split,) = [m for m in list_gguf_models(REPO, endpoint=hub.url) if m.name.startswith("split")]

    assert split.missing == ("split/tiny-00002-of-00003.gguf",)
    assert not split.complete and split.size is None


def test_it_follows_the_hubs_pagination(payload):
    files = {f"m-{i:02d}.gguf": payload[:1000] for i in range(7)}
    with FakeHub(page_size=3) as hub:
        hub.add_repo(REPO, files)

        models = list_gguf_models(REPO, endpoint=hub.url)

        assert [m.name for m in models] == sorted(files)
        assert len(hub.requests("hub", "GET")) == 3


def test_a_private_repo_is_listed_with_a_granted_token(hub, payload):
    hub.add_repo("acme/private", {"m.gguf": payload}, private=True)
    hub.grant("hf_reader", "acme/private")

    with pytest.raises(RepoNotFound, match="or it is private: give a token"):
        list_gguf_models("acme/private", endpoint=hub.url)
    assert [
        m.name for m in list_gguf_models("acme/private", token="hf_reader", endpoint=hub.url)
    ] == ["m.gguf"]


def test_a_missing_revision_is_reported_as_such(hub, repo):
    with pytest.raises(RevisionNotFound, match=f"{REPO} @ nope: revision not found"):
        list_gguf_models(REPO, revision="nope", endpoint=hub.url)


def test_grouping_ignores_other_files_and_orders_shards():
    infos = [
        RepoFileInfo("b-00002-of-00002.gguf", 5),
        RepoFileInfo("README.md", 1),
        RepoFileInfo("b-00001-of-00002.gguf", 7),
        RepoFileInfo("a.gguf", None),
    ]

    assert group_gguf_files(infos) == [
        GgufModel("a.gguf", (infos[3],)),
        GgufModel("b.gguf", (infos[2], infos[0])),
    ]
    assert group_gguf_files(infos)[1].size == 12 and group_gguf_files(infos)[0].size is None
