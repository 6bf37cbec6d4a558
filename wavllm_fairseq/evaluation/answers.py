"""Closed-answer extraction: which label a free-form reply names.

The rule, the same for every closed-answer task:

1. The reply is read case-insensitively, with punctuation as word breaks ("Yes, there is only
   one speaker." reads ``yes there is only one speaker``).
2. Every label of the task's label set is looked for as a whole word or word sequence; longer
   labels are matched first and their words are not reused (option "red ball" does not also
   count as option "ball").
3. Exactly one distinct label named: that is the answer. Two or more: the reply is *ambiguous*
   and scores wrong ("yes and no"; "normal, not fast" also counts as two: negation is not
   parsed). None: the reply *named no valid label*; it scores wrong and its share is reported
   separately, since it tells a model that does not answer from one that answers wrongly.

Label sets (:func:`label_set`):

- ``sv``: yes / no;
- ``er``: neutral / happy / angry / sad (IEMOCAP's four classes, ``manifests.iemocap``);
- ``rate``: slow / normal / fast (the demo's speaking-rate task, standing in for ER);
- ``sqa``: the options written in the row's own prompt, either lettered ("A. by bus B. in the
  car", also "A. ...; B. ...", the release's Gaokao format) or listed ("Options: cat, dog, fox.",
  the demo's). With lettered options an option is named by its text or by its letter; a letter
  counts only at the very start of the reply ("B", "B.", "(B) ...") or right after "option" or
  "answer" ("the answer is B"), since a lone "a" elsewhere is an article; a reply made of
  letters only ("A or B") names each of them.

The reference goes through the same rule; a reference that does not name exactly one label is
an error in the test set, reported with the row's id.
"""
from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

FIXED_LABEL_SETS: Dict[str, Tuple[str, ...]] = {
    "sv": ("yes", "no"),
    "er": ("neutral", "happy", "angry", "sad"),
    "rate": ("slow", "normal", "fast"),
}
"""Task -> its labels, for tasks whose labels do not depend on the row."""
OPTION_TASKS = ("sqa",)
"""Tasks whose labels are the options written in each row's prompt."""

_LETTER_MARK = re.compile(r"(?<![^\s;,(])([A-H])[.)]\s+")
_LISTED_OPTIONS = re.compile(r"Options:\s*(.+?)\s*$", re.S)
_LEADING_LETTER = re.compile(r"^\W*\(?([A-H])(?:[.):;,]|\s|$)")
_NAMED_LETTER = re.compile(r"\b(?i:option|answer(?:\s+is)?)\s*:?\s*\(?([A-H])\b")
_LETTERS_ONLY = re.compile(r"^\W*\(?[A-H]\)?(?:\s*(?:,|/|\bor\b|\band\b)\s*\(?[A-H]\)?)+\W*$")


def words(text: str) -> List[str]:
    """Lower-cased words, punctuation as breaks (apostrophes kept inside words)."""
    text = unicodedata.normalize("NFKC", text).lower()
    punct = string.punctuation.replace("'", "")
    return text.translate(str.maketrans(punct, " " * len(punct))).split()


@dataclass(frozen=True)
class LabelSet:
    labels: Tuple[str, ...]
    """Canonical labels (for options: the letter when lettered, else the option text)."""
    surface: Tuple[Tuple[str, str], ...] = ()
    """(text, label) pairs that name a label besides the label itself (an option's text)."""
    letters: bool = False
    """Whether a lone option letter names a label (lettered options)."""

    def __post_init__(self):
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError(f"a label set needs distinct labels, got {self.labels}")


def options_span(prompt: str) -> Optional[Tuple[int, LabelSet]]:
    """Where the options of an SQA prompt start, and the options; None if it has none in a known layout."""
    marks = list(_LETTER_MARK.finditer(prompt))
    # The options are the last run A, B, C, ... of letter marks (a question may contain an "A.").
    starts = [i for i, m in enumerate(marks) if m.group(1) == "A"]
    for start in reversed(starts):
        run = [marks[start]]
        for m in marks[start + 1:]:
            if ord(m.group(1)) != ord(run[-1].group(1)) + 1:
                break
            run.append(m)
        if len(run) < 2:
            continue
        texts = []
        for m, nxt in zip(run, run[1:] + [None]):
            texts.append(" ".join(words(prompt[m.end(): nxt.start() if nxt else len(prompt)])))
        letters = tuple(m.group(1) for m in run)
        return run[0].start(1), LabelSet(letters, tuple(zip(texts, letters)), letters=True)
    listed = _LISTED_OPTIONS.search(prompt)
    if listed:
        options = tuple(" ".join(words(o)) for o in listed.group(1).rstrip(".").split(","))
        options = tuple(o for o in options if o)
        if len(options) >= 2:
            return listed.start(), LabelSet(options)
    return None


def parse_options(prompt: str) -> Optional[LabelSet]:
    """The options written in an SQA prompt, or None if it has none in a known layout.

    >>> parse_options("What will he do? A. Start to exercise; B. Rest; C. Work.").surface
    (('start to exercise', 'A'), ('rest', 'B'), ('work', 'C'))
    >>> parse_options("Which animal is mentioned? Options: cat, dog, fox, pig.").labels
    ('cat', 'dog', 'fox', 'pig')
    """
    span = options_span(prompt)
    return None if span is None else span[1]


def label_set(task: str, prompt: str) -> LabelSet:
    """The labels a reply to this row may name; ValueError if the task has none."""
    if task in FIXED_LABEL_SETS:
        return LabelSet(FIXED_LABEL_SETS[task])
    if task in OPTION_TASKS:
        options = parse_options(prompt)
        if options is None:
            raise ValueError(f"no options found in the prompt {prompt!r} (expected 'A. ... B. ...' or 'Options: a, b.')")
        return options
    raise ValueError(f"task {task!r} has no label set; closed-answer tasks are "
                     f"{', '.join(sorted(FIXED_LABEL_SETS) + list(OPTION_TASKS))}")


@dataclass(frozen=True)
class Extraction:
    named: Tuple[str, ...]
    """Every distinct label the reply names, in label-set order."""

    @property
    def answer(self) -> Optional[str]:
        """The label if exactly one is named, else None."""
        return self.named[0] if len(self.named) == 1 else None

    @property
    def status(self) -> str:
        """``answer``, ``none`` (no valid label) or ``ambiguous`` (two or more)."""
        return {0: "none", 1: "answer"}.get(len(self.named), "ambiguous")


def extract(reply: str, labels: LabelSet) -> Extraction:
    """Which labels ``reply`` names, by the rule in the module docstring.

    >>> extract("Yes, there is only one speaker.", label_set("sv", "")).answer
    'yes'
    >>> extract("Yes and no.", label_set("sv", "")).status
    'ambiguous'
    """
    tokens = words(reply)
    phrases = [(tuple(words(label)), label) for label in labels.labels if not labels.letters]
    phrases += [(tuple(words(text)), label) for text, label in labels.surface]
    named = set()
    used = [False] * len(tokens)
    for phrase, label in sorted(phrases, key=lambda p: -len(p[0])):
        n = len(phrase)
        if n == 0:
            continue
        for i in range(len(tokens) - n + 1):
            if not any(used[i:i + n]) and tuple(tokens[i:i + n]) == phrase:
                named.add(label)
                used[i:i + n] = [True] * n
    if labels.letters:
        reply = reply.strip()
        letters = [m.group(1) for p in (_LEADING_LETTER, _NAMED_LETTER) for m in p.finditer(reply)]
        if _LETTERS_ONLY.match(reply):
            letters += re.findall(r"[A-H]", reply)
        named.update(letter for letter in letters if letter in labels.labels)
    return Extraction(tuple(label for label in labels.labels if label in named))


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float
    """Percent of rows whose reply names exactly the reference's label."""
    no_label: float
    """Percent of rows whose reply names no valid label."""
    ambiguous: float
    """Percent of rows whose reply names two or more labels."""
    n: int


def accuracy(references: Sequence[Optional[str]], extractions: Sequence[Extraction]) -> AccuracyResult:
    """Accuracy of extracted answers against reference labels."""
    if len(references) != len(extractions) or not references:
        raise ValueError(f"need as many references as replies, and at least one ({len(references)}, {len(extractions)})")
    n = len(references)
    correct = sum(e.answer is not None and e.answer == r for r, e in zip(references, extractions))
    return AccuracyResult(100.0 * correct / n, 100.0 * sum(e.status == "none" for e in extractions) / n,
                          100.0 * sum(e.status == "ambiguous" for e in extractions) / n, n)


def reference_label(reference: str, labels: LabelSet, where: str) -> str:
    """The one label a reference names; ValueError naming ``where`` (set and id) otherwise."""
    found = extract(reference, labels)
    if found.answer is None:
        raise ValueError(f"{where}: reference {reference!r} names {found.status if found.named else 'no'} "
                         f"label(s) of {', '.join(labels.labels)}")
    return found.answer
