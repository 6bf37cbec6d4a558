from __future__ import annotations

import copy
import json
import os
import pickle

import gguf
import numpy as np
import pytest
import sentencepiece
from tokenizers import Tokenizer as HFTokenizer

from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError
from wavllm_fairseq.text.tokenizer_files import load_tokenizer

SAMPLES = [
    "hello", "the small dog runs home", "  two  spaces ", "line one\nline two", "What is 12 plus 30?",
    "unicode: café ñ 日本", "",
]


# --- SentencePiece --------------------------------------------------------------------------

def test_sentencepiece_encodes_like_sentencepiece(spm_path):
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    tok = load_tokenizer(spm_path)
    for text in SAMPLES:
        assert tok.encode(text) == sp.encode(text), text
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.unk_id) == (sp.get_piece_size(), 1, 2, 0)
    assert [tok.id_to_token(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]


def test_sentencepiece_adds_the_dummy_prefix_and_no_bos_eos(spm_path):
    tok = load_tokenizer(spm_path)
    ids = tok.encode("hello")
    assert tok.id_to_token(ids[0]).startswith("\u2581")
    assert tok.bos_id not in ids and tok.eos_id not in ids


def test_sentencepiece_control_strings_in_text_stay_text(spm_path):
    tok = load_tokenizer(spm_path)
    ids = tok.encode("a </s> b <s> c")
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.decode(ids) == "a </s> b <s> c"


def test_sentencepiece_decode_renders_control_tokens(spm_path):
    tok = load_tokenizer(spm_path)
    ids = [tok.bos_id] + tok.encode("the dog") + [tok.eos_id]
    assert tok.decode(ids) == "<s>the dog</s>"
    assert tok.decode(tok.encode("line one\nline two")) == "line one\nline two"


def test_sentencepiece_token_lookup(spm_path):
    tok = load_tokenizer(spm_path)
    assert tok.token_to_id("</s>") == tok.eos_id == tok.encode_special("</s>")
    assert tok.token_to_id("<|eot_id|>") is None
    with pytest.raises(CheckpointError, match="eot_id"):
        tok.encode_special("<|eot_id|>")


# --- Hugging Face tokenizer.json --------------------------------------------------------------

def test_tokenizer_json_encodes_like_tokenizers(hf_json_path):
    ref = HFTokenizer.from_file(hf_json_path)
    for path in (hf_json_path, os.path.dirname(hf_json_path)):
        tok = load_tokenizer(path)
        for text in SAMPLES:
            assert tok.encode(text) == ref.encode(text, add_special_tokens=False).ids, text
            assert tok.decode(tok.encode(text)) == text
        assert tok.vocab_size == ref.get_vocab_size(with_added_tokens=True)
        # No config files beside it: the Llama-3 names are recognized.
        assert tok.bos_id == ref.token_to_id("<|begin_of_text|>")
        assert tok.eos_id == ref.token_to_id("<|end_of_text|>")
        assert tok.unk_id is None


def test_tokenizer_json_special_strings_in_text_stay_text(hf_json_path):
    ref = HFTokenizer.from_file(hf_json_path)
    tok = load_tokenizer(hf_json_path)
    specials = {ref.token_to_id(t) for t in ("<|eot_id|>", "<|im_end|>", "<|im_start|>", "<|begin_of_text|>")}
    text = "x <|eot_id|> y <|im_end|><|im_start|><|begin_of_text|>"
    ids = tok.encode(text)
    assert not specials & set(ids)
    assert tok.decode(ids) == text
    # ...while the reference tokenizer, left to itself, would have matched them.
    assert specials <= set(ref.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("clone", [lambda t: pickle.loads(pickle.dumps(t)), copy.deepcopy])
def test_copies_keep_special_strings_as_text(hf_json_path, spm_path, clone):
    """Data loader workers get pickled copies; they must tokenize exactly like the original."""
    text = "x <|eot_id|> y <|im_end|> </s> <s>"
    for tok in (load_tokenizer(hf_json_path), load_tokenizer(spm_path)):
        assert clone(tok).encode(text) == tok.encode(text)


def test_tokenizer_json_specials_decode_as_text(hf_json_path):
    tok = load_tokenizer(hf_json_path)
    im_start = tok.encode_special("<|im_start|>")
    assert tok.decode([im_start] + tok.encode("user")) == "<|im_start|>user"


def test_tokenizer_config_names_the_special_tokens(hf_json_path, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(open(hf_json_path).read())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<|im_start|>", "special": True}, "eos_token": "<|im_end|>", "unk_token": None,
    }))
    tok = load_tokenizer(str(folder))
    assert tok.bos_id == tok.token_to_id("<|im_start|>")
    assert tok.eos_id == tok.token_to_id("<|im_end|>")
    assert tok.unk_id is None


# --- GGUF -------------------------------------------------------------------------------------

GGUF_TEXTS = [
    "Hello world! How are you today?", "  leading and  double spaces\n\nand newlines\t tabs",
    "Digits 1234567890 and 3.14159", "unicode: café, naïve, 日本語, emoji 🎉", "it's we'll they've I'm",
    "code: def f(x): return x**2  # comment", "<|im_start|> is plain text here </s>",
]


def test_smollm2_gguf_round_trips_and_keeps_its_specials(smollm_gguf_path):
    tok = load_tokenizer(smollm_gguf_path)
    assert tok.vocab_size == 49152
    for text in GGUF_TEXTS:
        assert tok.decode(tok.encode(text)) == text, text
    im_start, im_end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    assert im_start is not None and im_end is not None and im_start != im_end
    assert tok.decode([im_start]) == "<|im_start|>" and tok.decode([im_end]) == "<|im_end|>"
    assert im_start not in tok.encode("<|im_start|>") and im_end not in tok.encode("<|im_end|>")
    assert tok.eos_id is not None and tok.bos_id is not None


def test_smollm2_gguf_uses_its_pre_tokenizer(smollm_gguf_path):
    tok = load_tokenizer(smollm_gguf_path)
    # Byte-level BPE: a space is part of the next word, shown as "Ġ".
    assert [tok.id_to_token(i) for i in tok.encode("Hello world")] == ["Hello", "Ġworld"]
    # SmolLM2 ("smollm" pre-tokenizer, as in llama.cpp and its tokenizer.json) isolates every
    # digit before the GPT-2 split, so a run of spaces before a digit stays one piece.
    assert [tok.decode([i]) for i in tok.encode("2024")] == ["2", "0", "2", "4"]
    assert [tok.decode([i]) for i in tok.encode("x\n        2")] == ["x", "\n        ", "2"]


def _write_gguf(path, metadata_writer):
    writer = gguf.GGUFWriter(str(path), "llama")
    metadata_writer(writer)
    writer.add_tensor("dummy", np.zeros(1, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_llama_style_gguf_encodes_like_its_sentencepiece_model(spm_path, tmp_path):
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    n = sp.get_piece_size()

    def piece_type(i):  # GGUF token types mirror SentencePiece's
        return 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1

    def metadata(w):
        w.add_tokenizer_model("llama")
        w.add_token_list([sp.id_to_piece(i) for i in range(n)])
        w.add_token_scores([sp.get_score(i) for i in range(n)])
        w.add_token_types([piece_type(i) for i in range(n)])
        w.add_bos_token_id(sp.bos_id())
        w.add_eos_token_id(sp.eos_id())
        w.add_unk_token_id(sp.unk_id())

    path = tmp_path / "tiny-llama.gguf"
    _write_gguf(path, metadata)
    tok = load_tokenizer(str(path))
    for text in SAMPLES + GGUF_TEXTS:
        assert tok.encode(text) == sp.encode(text), text
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.unk_id) == (n, sp.bos_id(), sp.eos_id(), sp.unk_id())

    def without_space_prefix(w):
        metadata(w)
        w.add_add_space_prefix(False)

    _write_gguf(tmp_path / "no-prefix.gguf", without_space_prefix)
    tok = load_tokenizer(str(tmp_path / "no-prefix.gguf"))
    assert not tok.id_to_token(tok.encode("hello")[0]).startswith("\u2581")
    assert tok.decode(tok.encode("the small dog")) == "the small dog"


# --- errors -----------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_tokenizer(str(tmp_path / "nope.model"))


def test_folder_without_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match="neither tokenizer.json nor tokenizer.model"):
        load_tokenizer(str(tmp_path))


def test_unsupported_files(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(CheckpointError, match="unsupported tokenizer format"):
        load_tokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="not a SentencePiece model.*tiktoken"):
        load_tokenizer(str(tmp_path / "tokenizer.model"))
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path / "broken.json"))


def test_unsupported_gguf_tokenizers(tmp_path):
    def bert(w):
        w.add_tokenizer_model("bert")
        w.add_token_list(["[PAD]", "a"])

    _write_gguf(tmp_path / "bert.gguf", bert)
    with pytest.raises(CheckpointError, match="unsupported GGUF tokenizer model 'bert'"):
        load_tokenizer(str(tmp_path / "bert.gguf"))

    def unknown_pre(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("no-such-pre")
        w.add_token_list(["a", "b", "ab"])
        w.add_token_merges(["a b"])

    _write_gguf(tmp_path / "pre.gguf", unknown_pre)
    with pytest.raises(CheckpointError, match="unknown pre-tokenizer 'no-such-pre'.*smollm"):
        load_tokenizer(str(tmp_path / "pre.gguf"))

    data = (tmp_path / "pre.gguf").read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(data[:60])
    with pytest.raises(CheckpointError, match="truncated GGUF metadata"):
        load_tokenizer(str(tmp_path / "truncated.gguf"))

    _write_gguf(tmp_path / "empty.gguf", lambda w: None)
    with pytest.raises(CheckpointError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path / "empty.gguf"))
