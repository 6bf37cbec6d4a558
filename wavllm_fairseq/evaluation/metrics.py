"""Corpus-level ASR and ST metrics.

WER is reported twice: *raw* (words split on white space, case and punctuation count, as
fairseq's ``--scoring wer`` does) and *normalised*, after Whisper's English text normaliser, the
convention of Whisper-era ASR papers (LibriSpeech 2.0 / 4.8 in the WavLLM paper is such a figure):
both reference and hypothesis are lower-cased, punctuation and fillers removed, numbers written
as digits, British spellings and contractions mapped to one form.

The normaliser comes from the PyPI package ``whisper-normalizer`` (MIT): a standalone copy of
openai-whisper's ``EnglishTextNormalizer`` with its spelling table, needing only ``regex`` and
``more-itertools``, where openai-whisper itself would bring its decoder, tiktoken and numba
(a test checks both give the same output on the normaliser cases we rely on).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, List, Sequence

import editdistance


@functools.lru_cache(maxsize=1)
def _english_normalizer() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_english(text: str) -> str:
    """Whisper's English text normaliser.

    >>> normalize_english("Mr. Smith paid $20, didn't he?")
    'mister smith paid $20 did not he'
    """
    return _english_normalizer()(text)


@dataclass(frozen=True)
class WordErrors:
    errors: int
    """Substitutions + deletions + insertions."""
    ref_words: int
    """Words in the reference(s)."""

    @property
    def wer(self) -> float:
        """Word error rate in percent; an empty reference scores 0 if the hypothesis is empty too, else 100."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else 100.0
        return 100.0 * self.errors / self.ref_words


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Word-level edit distance between two white-space tokenised strings."""
    ref, hyp = reference.split(), hypothesis.split()
    return WordErrors(editdistance.eval(ref, hyp), len(ref))


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> WordErrors:
    """Errors summed over the corpus, divided by its reference words (not a mean of row WERs)."""
    _check_lengths(references, hypotheses)
    rows = [word_errors(r, h) for r, h in zip(references, hypotheses)]
    return WordErrors(sum(r.errors for r in rows), sum(r.ref_words for r in rows))


@dataclass(frozen=True)
class Bleu:
    score: float
    """Corpus BLEU (0-100)."""
    signature: str
    """sacreBLEU's signature: tokenizer, smoothing, casing, version."""


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str]) -> Bleu:
    """sacreBLEU with its defaults (13a tokenizer, exponential smoothing, case-sensitive), one reference."""
    from sacrebleu.metrics import BLEU

    _check_lengths(references, hypotheses)
    bleu = BLEU()
    result = bleu.corpus_score(list(hypotheses), [list(references)])
    return Bleu(float(result.score), str(bleu.get_signature()))


def sentence_bleu(reference: str, hypothesis: str) -> float:
    """One row's BLEU (effective order, so short sentences are not zero): for the per-row files only."""
    from sacrebleu.metrics import BLEU

    return float(BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score)


def _check_lengths(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def mean_and_std(values: List[float]) -> tuple:
    """Mean and population standard deviation (the spread of a task's scores across prompt wordings)."""
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
