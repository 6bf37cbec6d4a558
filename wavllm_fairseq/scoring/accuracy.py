"""``--scoring accuracy``: normalised exact match, for classification-style answers (SV, ER, SQA)."""

import re
import string
import unicodedata
from dataclasses import dataclass

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import BaseScorer, register_scorer

_PUNCT = re.compile("[%s]" % re.escape(string.punctuation))


def normalize_answer(text: str) -> str:
    """Case, punctuation, accents' composition and spacing do not count.

    >>> normalize_answer("  Yes. ")
    'yes'
    >>> normalize_answer("B) the  Cat!")
    'b the cat'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


@dataclass
class AccuracyScorerConfig(FairseqDataclass):
    pass


@register_scorer("accuracy", dataclass=AccuracyScorerConfig)
class AccuracyScorer(BaseScorer):
    def score(self) -> float:
        if not self.ref:
            return 0.0
        hits = sum(normalize_answer(r) == normalize_answer(p) for r, p in zip(self.ref, self.pred))
        return 100.0 * hits / len(self.ref)

    def result_string(self) -> str:
        return f"Accuracy: {self.score():.2f} ({len(self.ref)} examples)"
