"""Rewording an instruction: SQA keeps the row's question and options; pools are checked on load."""
import pytest

from wavllm_fairseq.evaluation.prompts import load_pool, reword

GAOKAO = "What will the man do next? A. Start to take exercise; B. Do as he always does; C. Change his working time."


def test_reword_keeps_question_and_options():
    assert reword("Transcribe the audio clip into text.", "Type what you hear.", "x") == "Type what you hear."
    assert reword(GAOKAO, "Pick one. {question} {options}", "x") == (
        "Pick one. What will the man do next? A. Start to take exercise; B. Do as he always does; "
        "C. Change his working time.")
    demo = "Listen to the audio and answer the question. Which animal is mentioned? Options: cat, dog, fox, pig."
    assert reword(demo, "From the clip: {question} {options}", "x") == \
        "From the clip: Which animal is mentioned? Options: cat, dog, fox, pig."
    with pytest.raises(ValueError, match="test_sqa.tsv, line 3, id 'q2': cannot find the question and options"):
        reword("Answer: A. yes B. no", "{question} {options}", "test_sqa.tsv, line 3, id 'q2'")


def test_bad_pool_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "pool.json"
    bad.write_text('{"asr": "not a list"}')
    with pytest.raises(ValueError, match=f"{bad}: a prompt pool is a JSON object"):
        load_pool(str(bad))
    bad.write_text("{")
    with pytest.raises(ValueError, match=f"{bad}: cannot read the prompt pool"):
        load_pool(str(bad))
