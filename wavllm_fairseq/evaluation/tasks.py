"""Which metric a test set gets.

A set's task is the manifest's ``task`` column when every row names the same one; a manifest
without that column (or with it empty) takes the part of its file name after the last ``_``:
``test-clean_asr.tsv`` -> asr, ``test_sqa.tsv`` -> sqa (the names ``manifests/`` and the demo
write); the released WavLLM's test manifests go by their own names (:data:`RELEASE_SETS`).
Rows of several tasks in one manifest, or a task with no metric here, are errors naming the file.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Optional

from .answers import FIXED_LABEL_SETS, OPTION_TASKS

METRICS: Dict[str, str] = {
    "asr": "wer",
    "st": "bleu",
    **{task: "accuracy" for task in (*FIXED_LABEL_SETS, *OPTION_TASKS)},
    "ii": "instruction_following",
    "cot": "instruction_following",
}
"""Task -> metric: ``wer`` (normalised WER %, lower is better), ``bleu`` (sacreBLEU),
``accuracy`` (closed answers, %), ``instruction_following`` (II/CoT, % of replies)."""
RELEASE_SETS: Dict[str, str] = {"asr": "asr", "en2de": "st", "sv": "sv", "emo": "er", "SQA": "sqa", "gaokao": "sqa"}
"""File name -> task of the released WavLLM's test manifests (``WavLLM/wavllm/test_data``) that have
references to score; its SQQA, II-task and CoT-task sets have none (the paper judged them with GPT-4)."""
LOWER_IS_BETTER = {"wer"}
REWORDABLE_METRICS = {"wer", "bleu", "accuracy"}
"""Metrics whose sets ``--prompt-variants`` decodes under other wordings of the instruction."""


def set_task(manifest_path: str, row_tasks: Iterable[Optional[str]]) -> str:
    """The task of a test set, from its rows' task column or else its file name."""
    tasks = sorted({t for t in row_tasks if t})
    if len(tasks) > 1:
        raise ValueError(f"{manifest_path}: rows of several tasks ({', '.join(tasks)}); "
                         "evaluate one manifest per task")
    if tasks:
        task, source = tasks[0], "task column"
    else:
        stem = os.path.splitext(os.path.basename(manifest_path))[0]
        task, source = RELEASE_SETS.get(stem, stem.rsplit("_", 1)[-1]), "file name"
    if task not in METRICS:
        raise ValueError(f"{manifest_path}: task {task!r} (from the {source}) has no metric; "
                         f"known tasks: {', '.join(METRICS)}")
    return task
