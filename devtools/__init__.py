"""Test and benchmark tooling, kept out of the production packages: tiny GGUF models
with random weights (``tiny_gguf``), loading them in llama.cpp and comparing its buffers
with the estimate (``llama_harness``, ``llama_worker``) over the reference matrix
(``estimator_matrix``). Not installed with gpufleet (pyproject's packages leave it
out); the suite and ``bench/`` import it from the checkout."""
