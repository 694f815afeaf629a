"""Split models: shards parsed into one model, and sibling names derived from one shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import (
    GGUFSplitError,
    LocalFileSource,
    load_model_facts,
    parse_model,
    shard_locations,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths = write_tiny_model(tmp_path_factory.mktemp("split") / "tiny.gguf", split_max_tensors=8)
    assert len(paths) == 3
    return paths


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = write_tiny_model(tmp_path_factory.mktemp("whole") / "tiny.gguf")
    return path


def _parse(paths: list[Path]):
    sources = [LocalFileSource(path) for path in paths]
    try:
        return parse_model(sources)
    finally:
        for source in sources:
            source.close()


def test_it_merges_the_shards_of_a_split_model_into_one(shards: list[Path], unsplit: Path) -> None:
    split_facts = _parse(shards)
    whole = load_model_facts(unsplit)

    assert split_facts.tensor_count == whole.tensor_count == 21
    assert split_facts.parameter_count == whole.parameter_count
    assert split_facts.total_tensor_bytes == whole.total_tensor_bytes
    assert split_facts.bytes_per_layer == whole.bytes_per_layer
    assert [t.name for t in split_facts.tensors] == [t.name for t in whole.tensors]
    assert split_facts.vocab_size == whole.vocab_size
    assert split_facts.tied_embeddings is False


def test_metadata_comes_from_the_first_shard(shards: list[Path]) -> None:
    facts = _parse(shards)

    assert facts.architecture == "llama" and facts.block_count == 2
    assert facts.metadata["split.count"] == 3 and facts.metadata["split.no"] == 0
    assert len(facts.shards) == 3
    assert [t.shard for t in facts.tensors] == [0] * 8 + [1] * 8 + [2] * 5


def test_each_shard_reports_its_own_data_section(shards: list[Path]) -> None:
    facts = _parse(shards)

    for shard, path in zip(facts.shards, shards, strict=True):
        assert shard.source_name == str(path)
        assert 0 <= path.stat().st_size - shard.required_size < 32
    assert facts.tensors[8].offset == 0  # offsets restart in every shard


def test_it_derives_sibling_shard_names_from_any_shard() -> None:
    expected = [f"/m/q-0000{n}-of-00003.gguf" for n in (1, 2, 3)]

    assert shard_locations("/m/q-00002-of-00003.gguf") == expected
    assert shard_locations(Path("/m/q-00003-of-00003.gguf")) == expected
    assert shard_locations("q-00001-of-00002.gguf") == [
        "q-00001-of-00002.gguf",
        "q-00002-of-00002.gguf",
    ]


def test_it_derives_sibling_shard_urls_and_keeps_the_query() -> None:
    url = "https://hf.co/o/r/resolve/main/M-Q4_K_M-00001-of-00002.gguf?download=true"

    assert shard_locations(url) == [
        url,
        "https://hf.co/o/r/resolve/main/M-Q4_K_M-00002-of-00002.gguf?download=true",
    ]


@pytest.mark.parametrize(
    "name",
    ["/m/model.gguf", "/m/x-00004-of-00003.gguf", "/m/x-00000-of-00000.gguf", "x-1-of-2.gguf"],
)
def test_a_name_that_is_not_a_shard_name_stands_alone(name: str) -> None:
    assert shard_locations(name) == [name]


def test_load_model_facts_finds_the_siblings_from_the_second_shard(shards: list[Path]) -> None:
    facts = load_model_facts(shards[1])

    assert facts.tensor_count == 21 and len(facts.shards) == 3


def test_it_rejects_a_missing_shard(shards: list[Path]) -> None:
    with pytest.raises(GGUFSplitError, match=r"split\.count=3 shards, but 2 were given"):
        _parse(shards[:2])


def test_it_rejects_shards_out_of_order(shards: list[Path]) -> None:
    with pytest.raises(GGUFSplitError, match=r"split\.no=2, expected 1"):
        _parse([shards[0], shards[2], shards[1]])


def test_it_rejects_a_later_shard_given_first(shards: list[Path]) -> None:
    with pytest.raises(GGUFSplitError, match=r"split\.no"):
        _parse([shards[1], shards[0], shards[2]])


def test_it_rejects_several_files_that_are_not_split(unsplit: Path) -> None:
    with pytest.raises(GGUFSplitError, match="is not split, but 2 files"):
        _parse([unsplit, unsplit])


def test_it_rejects_a_shard_of_another_model(shards: list[Path], tmp_path: Path) -> None:
    other = write_tiny_model(tmp_path / "other.gguf", split_max_tensors=11)

    with pytest.raises(GGUFSplitError):
        _parse([shards[0], other[1], shards[2]])
