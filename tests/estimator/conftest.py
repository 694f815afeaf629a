"""Fixtures: tiny models written on demand, parsed into ModelFacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import ModelFacts, PartialFileSource, load_model_facts, parse_model

FactsFactory = Callable[..., ModelFacts]


@pytest.fixture
def make_facts(tmp_path: Path) -> FactsFactory:
    """``make_facts(n_layer=4, ...)``: facts of a generated model (header only by default)."""
    counter = iter(range(1_000_000))

    def make(header_only: bool = True, **spec: Any) -> ModelFacts:
        path = tmp_path / f"model-{next(counter)}.gguf"
        (written,) = write_tiny_model(path, header_only=header_only, **spec)
        if header_only:
            return parse_model([PartialFileSource(written)])
        return load_model_facts(written)

    return make
