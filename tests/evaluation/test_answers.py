"""Closed-answer extraction: the documented rule on edge cases, and accuracy with its shares."""
import pytest

from wavllm_fairseq.evaluation.answers import accuracy, extract, label_set, parse_options, reference_label

SV = label_set("sv", "Is there only one speaker in the audio clip?")


@pytest.mark.parametrize("reply,answer,status", [
    ("Yes, there is only one speaker.", "yes", "answer"),
    ("Yes, there is only one speaker in the audio clip", "yes", "answer"),  # the release's own reply
    ("no. Two people speak.", "no", "answer"),
    ("YES!", "yes", "answer"),
    ("Yes and no.", None, "ambiguous"),
    ("There is only one speaker.", None, "none"),
    ("yesterday nobody spoke", None, "none"),  # whole words only
    ("", None, "none"),
])
def test_speaker_verification(reply, answer, status):
    found = extract(reply, SV)
    assert (found.answer, found.status) == (answer, status)


def test_emotion_and_rate_labels():
    er = label_set("er", "What is the emotion?")
    assert extract("The speaker sounds sad.", er).answer == "sad"
    assert extract("Happy or angry, hard to say", er).status == "ambiguous"
    rate = label_set("rate", "")
    assert extract("fast", rate).answer == "fast"
    assert extract("normal, not fast", rate).status == "ambiguous"  # negation is not parsed


GAOKAO = "What will the man do next? A. Start to take exercise; B. Do as he always does; C. Change his working time."


@pytest.mark.parametrize("reply,answer", [
    ("A", "A"), ("B.", "B"), ("(C) Change his working time.", "C"), ("The answer is B", "B"),
    ("Option C", "C"), ("He will change his working time.", "C"), ("B. Do as he always does", "B"),
    ("A or B", None), ("It is a good idea to start to take exercise", "A"),  # the article "a" is not option A
    ("Answer: start to take exercise, or do as he always does", None), ("I do not know", None),
])
def test_lettered_options(reply, answer):
    assert extract(reply, label_set("sqa", GAOKAO)).answer == answer


def test_option_layouts():
    lettered = parse_options("Q? A. by bus B. in the man's car C. in her father's car")
    assert lettered.labels == ("A", "B", "C")
    assert dict(lettered.surface)["in her father's car"] == "C"
    listed = parse_options("Which object is mentioned? Options: red ball, ball, box, cup.")
    assert listed.labels == ("red ball", "ball", "box", "cup")
    # the longer option takes its words first: "red ball" is not also "ball"
    assert extract("a red ball", listed).answer == "red ball"
    assert extract("the ball", listed).answer == "ball"
    assert parse_options("Transcribe the audio.") is None
    with pytest.raises(ValueError, match="no options found"):
        label_set("sqa", "Transcribe the audio.")
    with pytest.raises(ValueError, match="has no label set"):
        label_set("asr", "")


def test_accuracy_reports_no_label_and_ambiguous_shares():
    replies = ["Yes, one speaker.", "No.", "Yes and no", "I cannot tell", "yes"]
    refs = ["yes", "yes", "no", "no", "yes"]
    result = accuracy(refs, [extract(r, SV) for r in replies])
    assert (result.accuracy, result.no_label, result.ambiguous, result.n) == (40.0, 20.0, 20.0, 5)


def test_reference_must_name_one_label():
    assert reference_label("B. Do as he always does", label_set("sqa", GAOKAO), "x") == "B"
    with pytest.raises(ValueError, match="test_sv, id 'u7': reference 'maybe' names no label"):
        reference_label("maybe", SV, "test_sv, id 'u7'")
