"""Upper bounds for architectures without an exact graph (``ModelShape.exact`` false).

The estimator replays llama.cpp's graphs only for ``EXACT_ARCHITECTURES``. For any
other architecture ``estimate()`` gives a bound that is not under what llama.cpp
allocates, component by component:

- **weights**: exact. Tensor sizes are in the file and llama.cpp allocates each
  tensor once (plus the repacking and alignment ``weights.py`` already models).
- **KV cache**: every layer caches ``n_head_kv * (key_length + value_length)`` values
  per cell for the full context of every sequence, in the cache types set, also the
  sliding-window layers (counted as if ``swa_full`` were on) and layers without
  attention heads (recurrent layers of hybrids count as attention layers with the
  most heads of any layer). llama.cpp never caches more per layer; MLA (deepseek2)
  caches less. Recurrent state (Mamba's conv and SSM states, RWKV's, LFM2's short
  convolutions: ``llama_hparams::n_embd_r/n_embd_s``, F32, one per sequence) is added
  for every layer when the file has their keys (``ModelShape.recurrent_bytes``).
  Architectures for which ``llama_model::create_memory`` makes no memory
  (``NO_CACHE_ARCHITECTURES``: bert-style encoders, diffusion models, or any with
  ``<arch>.attention.causal = false``) have no KV cache: 0.
- **compute**: the llama-like replay of ``sched_reserve``'s worst-case graph, times
  ``INEXACT_COMPUTE_FACTOR`` (1.5). The buffer's high-water mark is set by a few
  activations of the ubatch: ``n_tokens x n_head x n_kv`` attention scores (without
  flash attention), ``n_tokens x n_ff`` feed-forward and ``n_outputs x n_vocab``
  logits. Architectures differ from llama in how many of them are alive at once
  (extra norms, gates, biases, separate head sizes): the misses measured against
  llama.cpp for architectures outside the exact set were at most -26 % (flash
  attention with ``key_length`` unlike ``n_embd / n_head``) and -21 % (iSWA), i.e.
  llama.cpp needed up to 1.35x the replay; 1.5x covers that with room. For
  encoders the replay attends over the ubatch itself (``n_kv = n_tokens``, one
  stream), as ``build_attn_inp_no_cache`` does, and the batch is not capped by the
  context (``cparams.n_batch`` of a non-causal model).
- **output**: the logits rows plus an embeddings row per sequence (``output_reserve``
  with ``embeddings`` on).

``tests/estimator/test_upper_bound.py`` checks the bound against real llama.cpp loads.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil

from models_app.estimator.attention import GraphSpec
from models_app.estimator.settings import RunSettings
from models_app.estimator.shape import INEXACT_COMPUTE_FACTOR, ModelShape


def kv_settings(shape: ModelShape, settings: RunSettings) -> RunSettings:
    """The settings the KV bound is counted with: every layer's cache at full size."""
    return settings if shape.exact else replace(settings, swa_full=True)


def encoder_spec(spec: GraphSpec) -> GraphSpec:
    """An encoder's graph: attention over the ubatch's own tokens, no cache."""
    return replace(
        spec, n_kv=spec.n_tokens, n_stream=1, type_k="F16", type_v="F16", k_rot=0, v_rot=0
    )


def compute_bound(size: int) -> int:
    """A replayed compute buffer scaled to the bound for an inexact architecture."""
    return ceil(size * INEXACT_COMPUTE_FACTOR)


def output_bound(shape: ModelShape, n_seq_max: int) -> int:
    """An embeddings row per sequence on top of the logits (``embeddings`` on)."""
    return shape.n_embd * n_seq_max * 4
