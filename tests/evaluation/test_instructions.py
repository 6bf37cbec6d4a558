"""Instruction-following checks of II/CoT replies, and scoring of whole sets of every task."""
import pytest

from wavllm_fairseq.evaluation.instructions import check_reply, follows, split_parts
from wavllm_fairseq.evaluation.scoring import DecodedRow, score_set
from wavllm_fairseq.evaluation.tasks import set_task

II_PROMPT = "First transcribe the audio clip, then answer the question. Which animal is mentioned? Options: cat, dog, fox, pig."
II_REF = "Transcript: the small dog sees a red ball Answer: dog"
COT_PROMPT = "First transcribe the audio clip, then translate the transcript into German."
COT_REF = "Transcript: the dog sees a ball Translation: Der Hund sieht einen Ball"


@pytest.mark.parametrize("reply,followed,reasons", [
    ("Transcript: the small cat sees a red ball Answer: cat", True, ["", ""]),  # wrong but followed
    ("transcript: the dog. answer: The answer is dog.", True, ["", ""]),
    ("the small dog sees a red ball Answer: dog", False, ["missing", ""]),
    ("Transcript: Answer: dog", False, ["empty", ""]),
    ("Transcript: a dog Answer: dog or cat", False, ["", "two or more labels"]),
    ("Transcript: a dog Answer: a ball", False, ["", "no valid label"]),
    ("Transcript: a dog Answer: dog Answer: dog", False, ["", "repeated"]),
])
def test_ii_checks(reply, followed, reasons):
    checks = check_reply(II_PROMPT, II_REF, reply, "test_ii, id 'x'")
    assert [c.reason for c in checks] == reasons
    assert follows(checks) is followed


def test_cot_translation_must_not_copy_the_transcript():
    copy = check_reply(COT_PROMPT, COT_REF, "Transcript: the dog sees a ball Translation: The dog sees a ball.", "x")
    assert [c.reason for c in copy] == ["", "copy of the transcript"]
    good = check_reply(COT_PROMPT, COT_REF, "Transcript: the dog sees a ball Translation: Der Hund sieht", "x")
    assert follows(good)


def test_emotion_part_and_bad_reference():
    checks = check_reply("Transcribe it. Then: what is the emotion?", "Transcript: hi there Emotion: sad",
                         "Transcript: hi there Emotion: angry", "x")
    assert follows(checks) and checks[1].extraction.answer == "angry" and checks[1].reference_label == "sad"
    assert split_parts("no labels here") == []
    with pytest.raises(ValueError, match="test_ii, id 'r1': reference 'just text' has no labelled parts"):
        check_reply("p", "just text", "reply", "test_ii, id 'r1'")


def rows(prompt, pairs):
    return [DecodedRow(f"r{i}", prompt, ref, hyp) for i, (ref, hyp) in enumerate(pairs)]


def test_score_set_every_metric():
    asr, records = score_set("test_asr", "asr", rows("Transcribe.", [("Hello, world!", "hello world"),
                                                                      ("twenty five cats", "25 dogs")]))
    assert asr["metric"] == "wer" and asr["score"] == 25.0 and asr["wer_raw"] == 100.0 and asr["n"] == 2
    assert records[1]["hypothesis_normalised"] == "25 dogs" and records[1]["errors"] == 1

    st, _ = score_set("test_st", "st", rows("Translate.", [("Der Hund sieht einen Ball", "Der Hund sieht einen Ball")]))
    assert st["score"] == pytest.approx(100.0) and "tok:13a" in st["signature"]

    sv, records = score_set("test_sv", "sv", rows("Is there only one speaker?", [
        ("Yes", "Yes, there is only one speaker."), ("No", "Yes"), ("No", "yes and no"), ("Yes", "Hmm")]))
    assert (sv["score"], sv["no_label_percent"], sv["ambiguous_percent"]) == (25.0, 25.0, 25.0)
    assert [r["status"] for r in records] == ["answer", "answer", "ambiguous", "none"]

    ii, records = score_set("test_ii", "ii", rows(II_PROMPT, [
        (II_REF, "Transcript: the small dog sees a red ball Answer: dog"),
        (II_REF, "Transcript: the small cat sees a red ball Answer: cat"),
        (II_REF, "the small dog sees a red ball")]))
    assert ii["metric"] == "instruction_following" and ii["score"] == pytest.approx(200 / 3)
    assert ii["parts_followed_percent"] == {"transcript": pytest.approx(200 / 3), "answer": pytest.approx(200 / 3)}
    # transcript WER: 0 + 1 + 7 (missing part) errors over 3 x 7 reference words
    assert ii["subtasks"]["transcript_wer"] == pytest.approx(100 * 8 / 21)
    assert ii["subtasks"]["answer_accuracy"] == pytest.approx(100 / 3)
    assert records[2]["parts"][0] == {"part": "transcript", "passed": False, "reason": "missing", "reply": ""}


def test_set_task_from_column_or_file_name():
    assert set_task("data/test_sv.tsv", ["sv", "sv"]) == "sv"
    assert set_task("data/test-clean_asr.tsv", [None, None]) == "asr"
    assert set_task("data/whatever.tsv", ["rate"]) == "rate"
    with pytest.raises(ValueError, match="data/test.tsv: rows of several tasks"):
        set_task("data/test.tsv", ["asr", "st"])
    with pytest.raises(ValueError, match="data/test_text.tsv: task 'text' \\(from the file name\\) has no metric"):
        set_task("data/test_text.tsv", [None])


def test_the_released_wavllm_test_manifests_go_by_their_names():
    assert [set_task(f"test_data/{name}.tsv", [None]) for name in ("asr", "en2de", "sv", "emo", "SQA", "gaokao")] == [
        "asr", "st", "sv", "er", "sqa", "sqa"]
    with pytest.raises(ValueError, match="task 'SQQA' \\(from the file name\\) has no metric"):
        set_task("test_data/SQQA.tsv", [None])
