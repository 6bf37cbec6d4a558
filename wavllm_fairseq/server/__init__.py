"""The OpenAI-compatible HTTP server behind ``python -m wavllm_fairseq.serve`` (the ``serve`` extra)."""
