"""Regression corpus: inputs kept from fuzzing (atheris and hypothesis), one per outcome.

Each ``corpus/*.bin`` is parsed as a complete file and as a partial download; the
outcome type must stay what ``corpus/expected.json`` records, and nothing but a
GGUFError may escape. Add new crashers here with the outcome they should have.
"""

from __future__ import annotations

import json

import pytest

from tests.gguf.fuzzing import CORPUS, parse_bytes

EXPECTED: dict[str, list[str]] = json.loads((CORPUS / "expected.json").read_text())


def test_every_corpus_file_has_an_expected_outcome() -> None:
    assert sorted(path.stem for path in CORPUS.glob("*.bin")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_corpus_input_gives_its_recorded_outcome(name: str) -> None:
    data = (CORPUS / f"{name}.bin").read_bytes()

    outcomes = [type(parse_bytes(data, complete=complete)).__name__ for complete in (True, False)]

    assert outcomes == EXPECTED[name]
