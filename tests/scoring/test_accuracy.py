from wavllm_fairseq.scoring.accuracy import AccuracyScorer, AccuracyScorerConfig, normalize_answer


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalize_answer(" Yes. ") == normalize_answer("yes") == "yes"
    assert normalize_answer("B) the  Cat!") == "b the cat"


def test_accuracy_counts_normalised_exact_matches():
    s = AccuracyScorer(AccuracyScorerConfig())
    for ref, hyp in [("Yes", "yes."), ("No", "Yes"), ("happy", "Happy"), ("A", "A. cat")]:
        s.add_string(ref, hyp)
    assert s.score() == 50.0
    assert s.result_string() == "Accuracy: 50.00 (4 examples)"
