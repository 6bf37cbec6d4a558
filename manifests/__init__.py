"""Manifest builders: public corpora -> WavLLM TSV manifests (SPEC section 5).

One module per corpus, each runnable as ``python -m manifests.<name>`` and callable in-process
through its ``main(argv)``: ``librispeech`` (ASR), ``covost2`` (ST, ASR), ``voxceleb`` (SV),
``iemocap`` (ER, ASR), ``sqa`` (spoken QA), ``from_jsonl`` / ``from_csv`` (any other corpus), and
``combine`` (stage-2 II- and CoT-task rows from single-task manifests). Shared machinery lives in
``manifests.common``; the prompt paraphrases in ``manifests/prompts.json``.
"""
