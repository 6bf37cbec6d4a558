"""Tokenizers rebuilt from the vocabulary a GGUF file stores in its metadata: llama-style (a
SentencePiece BPE model) and gpt2-style (byte-level BPE with llama.cpp's pre-tokenizers)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from ..models.common.checkpoint_errors import CheckpointError
from ..models.common.gguf_metadata import read_gguf_metadata
from .sentencepiece_proto import proto_float, proto_message, proto_string, proto_varint
from .tokenizer import HuggingFaceTokenizer, SentencePieceTokenizer, Tokenizer

# GGUF token types (they mirror SentencePiece's piece types).
_GGUF_TOKEN_CONTROL = 3
_GGUF_TOKEN_USER_DEFINED = 4
_GGUF_TOKEN_BYTE = 6

# The pre-tokenizers of gpt2-style GGUF vocabularies, keyed by ``tokenizer.ggml.pre``, as
# llama.cpp defines them: (regex split or None for GPT-2's own regex, split digits one by one,
# ignore merges for words already in the vocabulary).
_GPT2_REGEX = None
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GGUF_PRE_TOKENIZERS: Dict[str, Tuple[Optional[str], bool, bool]] = {
    "default": (_GPT2_REGEX, False, False),
    "gpt2": (_GPT2_REGEX, False, False),
    "gpt-2": (_GPT2_REGEX, False, False),
    "mpt": (_GPT2_REGEX, False, False),
    "olmo": (_GPT2_REGEX, False, False),
    "smollm": (_GPT2_REGEX, True, False),
    "starcoder": (_GPT2_REGEX, True, False),
    "refact": (_GPT2_REGEX, True, False),
    "llama-bpe": (_LLAMA3_REGEX, False, True),
    "llama3": (_LLAMA3_REGEX, False, True),
    "qwen2": (_QWEN2_REGEX, False, False),
}


def load_gguf_tokenizer(path: str) -> Tokenizer:
    """The tokenizer stored in a GGUF file's metadata."""
    meta = read_gguf_metadata(path, ("tokenizer.",))
    model = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise CheckpointError(path, "the GGUF file holds no tokenizer", key="tokenizer.ggml.tokens")
    if model == "llama":
        return _gguf_sentencepiece(path, meta)
    if model == "gpt2":
        return _gguf_byte_level_bpe(path, meta)
    raise CheckpointError(
        path, f"unsupported GGUF tokenizer model {model!r} (supported: 'llama', 'gpt2')", key="tokenizer.ggml.model"
    )


def _gguf_byte_level_bpe(path: str, meta: Dict[str, object]) -> HuggingFaceTokenizer:
    from tokenizers import AddedToken, Regex
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    tokens: List[str] = meta["tokenizer.ggml.tokens"]
    types: List[int] = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _GGUF_PRE_TOKENIZERS:
        raise CheckpointError(
            path, f"unknown pre-tokenizer {pre!r} (known: {', '.join(sorted(_GGUF_PRE_TOKENIZERS))})",
            key="tokenizer.ggml.pre",
        )
    regex, split_digits, ignore_merges = _GGUF_PRE_TOKENIZERS[pre]
    vocab: Dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    steps = [pre_tokenizers.Digits(individual_digits=True)] if split_digits else []
    if regex is None:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        steps.append(pre_tokenizers.Split(Regex(regex), behavior="isolated"))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    # Control and user-defined tokens are matched whole, never split by the BPE model.
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _GGUF_TOKEN_CONTROL]
    )
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == _GGUF_TOKEN_USER_DEFINED]
    )
    names = {role: _gguf_special(meta, key, tokens) for role, key in _GGUF_SPECIAL_KEYS.items()}
    return HuggingFaceTokenizer(tok, path, names["bos"], names["eos"], names["unk"])


_GGUF_SPECIAL_KEYS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
}


def _gguf_special(meta: Dict[str, object], key: str, tokens: Sequence[str]) -> Optional[str]:
    i = meta.get(key)
    return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None


def _gguf_sentencepiece(path: str, meta: Dict[str, object]) -> SentencePieceTokenizer:
    """Rebuilds the SentencePiece model a llama-style GGUF vocabulary was converted from.

    llama.cpp's SPM tokenizer merges by piece score, which is SentencePiece's BPE model; the
    normalizer is LLaMA's: identity, dummy prefix space, spaces kept as they are.
    """
    import sentencepiece

    tokens: List[str] = meta["tokenizer.ggml.tokens"]
    scores: List[float] = meta.get("tokenizer.ggml.scores", [0.0] * len(tokens))
    types: List[int] = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    pieces = b"".join(
        proto_message(1, proto_string(1, t) + proto_float(2, s) + proto_varint(3, k))
        for t, s, k in zip(tokens, scores, types)
    )
    trainer = proto_varint(3, 2) + proto_varint(4, len(tokens))  # model_type BPE, vocab size
    trainer += proto_varint(35, int(_GGUF_TOKEN_BYTE in types))  # byte_fallback
    for role, (field_id, field_piece) in {"unk": (40, 45), "bos": (41, 46), "eos": (42, 47)}.items():
        i = meta.get(_GGUF_SPECIAL_KEYS[role])
        valid = isinstance(i, int) and 0 <= i < len(tokens)
        trainer += proto_varint(field_id, i if valid else -1)
        if valid:
            trainer += proto_string(field_piece, tokens[i])
    trainer += proto_varint(43, -1)  # pad_id: LLaMA has none
    normalizer = proto_string(1, "identity")
    normalizer += proto_varint(3, int(bool(meta.get("tokenizer.ggml.add_space_prefix", True))))
    normalizer += proto_varint(4, int(bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False))))
    normalizer += proto_varint(5, 1)  # escape whitespaces as U+2581
    proto = pieces + proto_message(2, trainer) + proto_message(3, normalizer)
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.load_from_serialized_proto(proto)
    except RuntimeError as e:
        raise CheckpointError(path, f"the GGUF vocabulary is not a valid SentencePiece model ({e})") from None
    return SentencePieceTokenizer(processor, path)
