"""The demo's stage-0 text LM data: text versions of the tasks, copying drills, no test-split word pairs."""
import collections
import random

import pytest

pytest.importorskip("espeak")

import demo  # noqa: E402  (examples/wavllm, on the path through pytest.ini)
import demo_corpus  # noqa: E402
import text_lm  # noqa: E402

from wavllm_fairseq.text.templates import get_template  # noqa: E402
from wavllm_fairseq.text.tokenizer_files import load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_lm")
    corpus = str(out / "corpus")
    demo_corpus.build_corpus(corpus, seed=5, size="tiny", quiet=True)
    return load_tokenizer(demo.train_tokenizer(corpus, str(out), vocab_size=300))


def test_text_is_planned_from_the_training_grammar_only():
    records = text_lm.text_records(scale=0.01)
    counts = collections.Counter(r.task for r in records)
    assert counts == {task: round(n * 0.01) for task, n in text_lm.TEXT_EXAMPLES.items()}
    assert all(not demo_corpus.is_held_out(*pair) for r in records for pair in r.combinations)
    assert {r.split for r in records} == {"train"}


def test_speech_only_answers_come_with_every_class_and_others_once(tokenizer):
    template = get_template("llama2")
    records = text_lm.text_records(scale=0.002)
    examples = text_lm.text_examples(records, tokenizer, template)
    expected = [(r.id, a) for r in records for a in demo_corpus.SPEECH_ONLY_ANSWERS.get(r.task, [r.target])]
    assert len(examples) == len(expected)
    # Examples follow the records: a speech-only prompt once per answer, the same words each time.
    inputs = collections.defaultdict(set)
    for (ids, first), (record_id, answer) in zip(examples, expected):
        target = template.encode_target(tokenizer, answer)
        assert ids[-len(target):] == target
        inputs[record_id].add(tuple(ids[: -len(target)]))
    assert all(len(v) == 1 for v in inputs.values())
    assert any(r.task == "sv" for r in records) and any(r.task == "rate" for r in records)


def test_copy_drills_ask_to_transcribe_words_in_an_order_the_grammar_cannot_predict(tokenizer):
    template = get_template("llama2")
    words = ["cat", "dog", "red", "sees", "the", "a", "box"]
    suffixes = {tuple(template.encode_prompt(tokenizer, p, with_speech=True).suffix) for p in demo_corpus.PROMPTS["asr"]}
    rng, texts = random.Random(0), set()
    for _ in range(20):
        ids, first = text_lm.copy_example(rng, words, tokenizer, template)
        # [prefix] words [suffix: an ASR prompt] the same words, end of turn
        splits = [k for k in range(first + 1, len(ids)) for suffix in suffixes
                  if tuple(ids[k:k + len(suffix)]) == suffix]
        assert splits, "no transcription prompt after the words"
        text = tokenizer.decode(ids[first:splits[0]])
        assert ids[-len(template.encode_target(tokenizer, text)):] == template.encode_target(tokenizer, text)
        assert 4 <= len(text.split()) <= 9 and set(text.split()) <= set(words)
        texts.add(text)
    assert len(texts) == 20
