"""A checkpoint saved before a change of the code's layout still loads and decodes as it did
(tests/checkpoints/before_layout/README.md says how it was made)."""
import json
import math
import os

import pytest
import torch

from wavllm_fairseq import WavLLM
from wavllm_fairseq.inference import Decoding

BEFORE_LAYOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "before_layout")


def test_checkpoint_from_before_the_layout_change_decodes_as_it_did():
    model = WavLLM.from_checkpoint(os.path.join(BEFORE_LAYOUT, "checkpoint.pt"),
                                   tokenizer=os.path.join(BEFORE_LAYOUT, "spm.model"), device="cpu")
    tone = (0.1 * torch.sin(2 * math.pi * 220 * torch.arange(16000) / 16000)).numpy()
    queries = [model.query(tone, "Transcribe the audio clip into text."), model.query(None, "the small dog runs home")]
    answers = model.answer(queries, Decoding(max_new_tokens=8))
    with open(os.path.join(BEFORE_LAYOUT, "expected.json")) as f:
        expected = json.load(f)
    assert [a.tokens for a in answers] == [e["tokens"] for e in expected]
    assert [a.score for a in answers] == pytest.approx([e["score"] for e in expected], abs=1e-4)
