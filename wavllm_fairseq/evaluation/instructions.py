"""Instruction following of multi-instruction replies (II-task and CoT-task).

A combined target names its parts with labels (``manifests.combine``, the demo corpus):
"Transcript: ... Translation: ..." (CoT), "Transcript: ... Answer: ..." or "... Emotion: ..."
(II). The reference's labels are the instructions to carry out; a reply *follows the
instructions* when, for every part of its reference, it has exactly one part with the same label
(case-insensitive, ``Label:``) that passes that part's check:

- transcript part (``Transcript``): has at least one word;
- translation part (``Translation``): has at least one word and is not the reply's own
  transcript again (a copy is not a translation);
- answer part (``Answer``, ``Emotion``): names exactly one label of the sub-task's label set
  (:mod:`.answers`): the options in the prompt when it has some, emotions for ``Emotion``, else
  the fixed label set (yes/no, ...) that the reference's answer belongs to.

The checks judge form, never correctness: a wrong transcript still follows the instruction to
transcribe. Correctness is in the sub-task metrics, scored over every row against the reference
parts (a missing part counts as an empty reply): transcript WER after Whisper's normaliser,
translation BLEU, answer accuracy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .answers import FIXED_LABEL_SETS, Extraction, LabelSet, extract, parse_options, words

PART_KINDS: Dict[str, str] = {"transcript": "transcript", "translation": "translation",
                              "answer": "answer", "emotion": "answer"}
"""Part label (lower case) -> the kind of check it gets."""
_PART_MARK = re.compile(r"\b(%s)\s*:" % "|".join(PART_KINDS), re.I)


def split_parts(text: str) -> List[Tuple[str, str]]:
    """(label in lower case, content) per labelled part, in order; text before the first label is dropped.

    >>> split_parts("Transcript: a dog. Answer: dog")
    [('transcript', 'a dog.'), ('answer', 'dog')]
    """
    marks = list(_PART_MARK.finditer(text))
    return [(m.group(1).lower(), text[m.end(): nxt.start() if nxt else len(text)].strip())
            for m, nxt in zip(marks, marks[1:] + [None])]


def answer_labels(part: str, prompt: str, reference_answer: str, where: str) -> LabelSet:
    """The label set of an answer part: the prompt's options, the emotions, or the fixed set the reference names."""
    if part == "emotion":
        return LabelSet(FIXED_LABEL_SETS["er"])
    options = parse_options(prompt)
    if options is not None:
        return options
    for labels in FIXED_LABEL_SETS.values():
        if extract(reference_answer, LabelSet(labels)).answer is not None:
            return LabelSet(labels)
    raise ValueError(f"{where}: no label set for the answer {reference_answer!r} "
                     "(no options in the prompt, and not a label of sv, er or rate)")


@dataclass(frozen=True)
class PartCheck:
    part: str
    """The part's label in lower case (transcript, translation, answer, emotion)."""
    passed: bool
    reason: str
    """Empty when passed; else why not (missing, repeated, empty, copy of the transcript, no label, two labels)."""
    reply: str
    """The reply's text for this part ('' when missing)."""
    reference: str
    extraction: Optional[Extraction] = None
    """Answer parts: the labels the reply's part names."""
    reference_label: Optional[str] = None
    """Answer parts: the reference's label."""


def check_reply(prompt: str, reference: str, reply: str, where: str) -> List[PartCheck]:
    """One PartCheck per labelled part of the reference; ValueError naming ``where`` if it has none."""
    ref_parts = split_parts(reference)
    if not ref_parts:
        raise ValueError(f"{where}: reference {reference!r} has no labelled parts "
                         f"({', '.join(p.capitalize() + ':' for p in PART_KINDS)})")
    found: Dict[str, List[str]] = {}
    for part, text in split_parts(reply):
        found.setdefault(part, []).append(text)
    transcript = " ".join(words(found["transcript"][0])) if len(found.get("transcript", [])) == 1 else None
    checks = []
    for part, ref_text in ref_parts:
        texts = found.get(part, [])
        text = texts[0] if len(texts) == 1 else ""
        extraction = ref_label = None
        kind = PART_KINDS[part]
        if kind == "answer":
            labels = answer_labels(part, prompt, ref_text, where)
            ref_label = extract(ref_text, labels).answer
            extraction = extract(text, labels)
        if not texts:
            reason = "missing"
        elif len(texts) > 1:
            reason = "repeated"
        elif not words(text):
            reason = "empty"
        elif kind == "translation" and " ".join(words(text)) == transcript:
            reason = "copy of the transcript"
        elif kind == "answer" and extraction.status != "answer":
            reason = "no valid label" if extraction.status == "none" else "two or more labels"
        else:
            reason = ""
        checks.append(PartCheck(part, not reason, reason, text, ref_text, extraction, ref_label))
    return checks


def follows(checks: List[PartCheck]) -> bool:
    """Whether a reply carried out every instruction."""
    return all(c.passed for c in checks)
