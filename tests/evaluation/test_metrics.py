"""WER (raw and after Whisper's normaliser) and sacreBLEU on hand-made hypotheses with known scores."""
import math

import pytest

from wavllm_fairseq.evaluation import metrics

NORMALISER_CASES = [
    # numbers are written as digits
    ("He bought twenty five apples.", "he bought 25 apples"),
    ("one hundred and two", "102"),
    # punctuation and casing do not count
    ("Hello, World!", "hello world"),
    # contractions and abbreviations are spelled out one way
    ("I won't go, he's late.", "i will not go he is late"),
    ("Mr. Smith", "mister smith"),
    # British spellings map to American ones
    ("The colour of the centre", "the color of the center"),
]


@pytest.mark.parametrize("text,expected", NORMALISER_CASES)
def test_whisper_normaliser(text, expected):
    assert metrics.normalize_english(text) == expected


def test_normaliser_matches_openai_whisper():
    whisper_normalizers = pytest.importorskip("whisper.normalizers")
    reference = whisper_normalizers.EnglishTextNormalizer()
    for text, _ in NORMALISER_CASES + [("Uh, it's 3:30 p.m. on the 21st, isn't it?", None)]:
        assert metrics.normalize_english(text) == reference(text)


def test_wer_counts_substitutions_deletions_insertions_over_reference_words():
    assert metrics.word_errors("the cat sat on the mat", "the cat sat on mat") == metrics.WordErrors(1, 6)
    assert metrics.word_errors("a b", "x a b y") == metrics.WordErrors(2, 2)
    total = metrics.corpus_wer(["a b c d", "e f"], ["a x c d", "e f g h"])
    assert (total.errors, total.ref_words) == (3, 6) and total.wer == 50.0


def test_raw_wer_counts_case_and_punctuation_normalised_does_not():
    refs, hyps = ["Hello, world!", "twenty five cats"], ["hello world", "25 cats"]
    # "Hello," and "world!" are 2 substitutions; "twenty five" -> "25" a substitution and a deletion
    assert metrics.corpus_wer(refs, hyps).wer == 80.0
    normalised = metrics.corpus_wer([metrics.normalize_english(t) for t in refs],
                                    [metrics.normalize_english(t) for t in hyps])
    assert normalised.wer == 0.0


def test_empty_reference():
    assert metrics.word_errors("", "").wer == 0.0
    assert metrics.word_errors("", "extra").wer == 100.0


def test_bleu_known_scores_and_signature():
    perfect = metrics.corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect.score == pytest.approx(100.0)
    # every n-gram precision is 1; brevity penalty exp(1 - 5/4)
    short = metrics.corpus_bleu(["a b c d e"], ["a b c d"])
    assert short.score == pytest.approx(100 * math.exp(-0.25), abs=1e-3)
    assert metrics.corpus_bleu(["a b c d"], ["x y z w"]).score == 0.0
    assert "tok:13a" in perfect.signature and "version:" in perfect.signature
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        metrics.corpus_bleu(["a", "b"], ["a"])


def test_mean_and_std():
    assert metrics.mean_and_std([1.0, 3.0]) == (2.0, 1.0)
