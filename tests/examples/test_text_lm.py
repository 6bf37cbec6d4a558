"""The demo's stage-0 text LM data: text versions of the tasks, with no answer tied to words it cannot hear."""
import collections
import json
import os
import sys

import pytest

pytest.importorskip("wavllm_fairseq.data.espeak")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "examples", "wavllm"))
import demo  # noqa: E402
import demo_corpus  # noqa: E402
import text_lm  # noqa: E402

from wavllm_fairseq.models.llama.templates import get_template  # noqa: E402
from wavllm_fairseq.models.llama.tokenizer import load_tokenizer  # noqa: E402


def test_speech_only_answers_come_with_every_class_and_others_once(tmp_path):
    corpus = str(tmp_path / "corpus")
    demo_corpus.build_corpus(corpus, seed=5, size="tiny", quiet=True)
    tokenizer = load_tokenizer(demo.train_tokenizer(corpus, str(tmp_path), vocab_size=300))
    template = get_template("llama2")
    examples = text_lm.text_examples(corpus, tokenizer, template)
    train = [json.loads(line) for line in open(os.path.join(corpus, "meta.jsonl"), encoding="utf-8")]
    train = [r for r in train if r["split"] == "train"]
    expected = [(r["id"], a) for r in train for a in demo_corpus.SPEECH_ONLY_ANSWERS.get(r["task"], [r["target"]])]
    assert len(examples) == len(expected)
    # Examples follow the records: a speech-only prompt once per answer, the same words each time.
    inputs = collections.defaultdict(set)
    for (ids, first), (record_id, answer) in zip(examples, expected):
        target = template.encode_target(tokenizer, answer)
        assert ids[-len(target):] == target
        inputs[record_id].add(tuple(ids[: -len(target)]))
    assert all(len(v) == 1 for v in inputs.values())
    assert any(r["task"] == "sv" for r in train) and any(r["task"] == "rate" for r in train)
