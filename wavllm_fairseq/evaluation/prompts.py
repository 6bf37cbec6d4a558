"""Rewordings of a test set's instruction, for measuring robustness to the prompt's wording.

A pool file (JSON: task -> list of wordings; default ``manifests/eval_prompts.json``, whose
wordings appear in no training pool of this repository) gives each task its rewordings; variant
``k`` of a set replaces every row's prompt by the pool's ``k``-th wording of the set's task.
Wordings with ``{question}`` and ``{options}`` (SQA) are filled from the row's own prompt: the
options are the lettered or listed run that ends it (:func:`answers.options_span`), the question
the last sentence ending in "?" before them.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List

import manifests

from .answers import options_span

DEFAULT_POOL = os.path.join(os.path.dirname(os.path.abspath(manifests.__file__)), "eval_prompts.json")
_QUESTION = re.compile(r"[^.?!]*\?")


def load_pool(path: str) -> Dict[str, List[str]]:
    """Task -> wordings, from a JSON object (keys starting with ``_`` are comments)."""
    try:
        with open(path, encoding="utf-8") as f:
            pool = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the prompt pool: {e}") from None
    if not isinstance(pool, dict) or not all(
            isinstance(v, list) and all(isinstance(w, str) and w.strip() for w in v)
            for k, v in pool.items() if not k.startswith("_")):
        raise ValueError(f"{path}: a prompt pool is a JSON object mapping each task to a list of non-empty strings")
    return {k: v for k, v in pool.items() if not k.startswith("_")}


def reword(prompt: str, wording: str, where: str) -> str:
    """``wording`` with the row's question and options filled in where it asks for them.

    >>> reword("Answer it. Which animal? Options: cat, dog.", "Pick one. {question} {options}", "x")
    'Pick one. Which animal? Options: cat, dog.'
    """
    if "{options}" not in wording and "{question}" not in wording:
        return wording
    span = options_span(prompt)
    questions = _QUESTION.findall(prompt[: span[0]]) if span else []
    if not questions:
        raise ValueError(f"{where}: cannot find the question and options in the prompt {prompt!r}")
    return wording.format(question=questions[-1].strip(), options=prompt[span[0]:].strip())
