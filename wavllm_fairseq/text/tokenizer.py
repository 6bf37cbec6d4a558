"""LLM tokenizers behind one small interface, loaded from whatever file the LLM ships with.

Supported: a SentencePiece ``.model`` (LLaMA-2), a Hugging Face ``tokenizer.json`` (or a folder
holding one), and the tokenizer stored in a GGUF file's metadata. Two rules hold for every
backend, because the chat templates depend on them:

* ``encode`` adds no BOS/EOS, and special-token strings inside the text (``</s>``,
  ``<|im_end|>``) are tokenized as plain text: user text must never forge a turn boundary.
  Templates insert special tokens by id (``token_to_id`` / ``encode_special``).
* ``decode`` drops nothing: special tokens come back as their surface form, so a template's
  full rendering can be checked against its text.
"""
from __future__ import annotations

import json
import os
import struct
from abc import ABC, abstractmethod
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..models.common.checkpoint_errors import CheckpointError


class Tokenizer(ABC):
    """What the task, the dictionary and the templates need from an LLM tokenizer."""

    path: str
    """The file it was loaded from, for error messages."""
    vocab_size: int
    """Number of ids, added/special tokens included."""
    bos_id: Optional[int]
    eos_id: Optional[int]
    unk_id: Optional[int]

    @abstractmethod
    def encode(self, text: str) -> List[int]:
        """Ids of ``text``, without BOS/EOS; special-token strings stay plain text."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens included as their surface form."""

    @abstractmethod
    def id_to_token(self, i: int) -> str:
        """The vocabulary entry of id ``i`` (a SentencePiece piece, a byte-level BPE string)."""

    @abstractmethod
    def token_to_id(self, token: str) -> Optional[int]:
        """The id of vocabulary entry ``token``, or None if the vocabulary lacks it."""

    def encode_special(self, name: str) -> int:
        """The id of special token ``name``; a clear error if the vocabulary lacks it."""
        i = self.token_to_id(name)
        if i is None:
            raise CheckpointError(self.path, f"the tokenizer has no token {name!r}")
        return i


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, processor, path: str):
        self.sp = processor
        self.path = path
        self.vocab_size = processor.get_piece_size()
        self.bos_id = _optional_id(processor.bos_id())
        self.eos_id = _optional_id(processor.eos_id())
        self.unk_id = _optional_id(processor.unk_id())

    def encode(self, text: str) -> List[int]:
        # SentencePiece never matches control pieces (<s>, </s>) in input text, and adds
        # the dummy prefix space itself, exactly as LLaMA-2's reference tokenizer does.
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        # SentencePiece's own decode drops control pieces silently; render them instead, and
        # decode each text run between them like a fresh sequence (the template encodes
        # the text after a special token with its own call, dummy prefix space included).
        out: List[str] = []
        run: List[int] = []
        for i in ids:
            i = int(i)
            if self.sp.is_control(i):
                out.append(self.sp.decode(run))
                out.append(self.sp.id_to_piece(i))
                run = []
            else:
                run.append(i)
        out.append(self.sp.decode(run))
        return "".join(out)

    def id_to_token(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def token_to_id(self, token: str) -> Optional[int]:
        i = self.sp.piece_to_id(token)
        # piece_to_id answers the unk id for unknown pieces.
        return i if self.sp.id_to_piece(i) == token else None


class HuggingFaceTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer``: from a tokenizer.json, or built from GGUF metadata."""

    def __init__(self, tokenizer, path: str, bos: Optional[str], eos: Optional[str], unk: Optional[str]):
        self.tok = tokenizer
        # Added special tokens in the text are split like ordinary text, not matched.
        self.tok.encode_special_tokens = True
        self.path = path
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.unk_id = (
            None if t is None else tokenizer.token_to_id(t) for t in (bos, eos, unk)
        )

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.tok.encode_special_tokens = True  # tokenizers does not pickle this flag

    def encode(self, text: str) -> List[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        token = self.tok.id_to_token(int(i))
        if token is None:
            raise IndexError(f"{self.path}: token id {i} is out of range (vocabulary of {self.vocab_size})")
        return token

    def token_to_id(self, token: str) -> Optional[int]:
        return self.tok.token_to_id(token)


def _optional_id(i: int) -> Optional[int]:
    return None if i < 0 else i


# ---------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json

# Used only when no tokenizer_config.json / special_tokens_map.json sits beside tokenizer.json.
_KNOWN_SPECIALS = {
    "bos": ("<s>", "<|begin_of_text|>", "<|startoftext|>"),
    "eos": ("</s>", "<|end_of_text|>", "<|endoftext|>"),
    "unk": ("<unk>", "<|unk|>"),
}


def _special_names_from_configs(folder: str) -> Dict[str, Optional[str]]:
    names: Dict[str, Optional[str]] = {}
    for config in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        path = os.path.join(folder, config)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for role in _KNOWN_SPECIALS:
            value = data.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) or (value is None and f"{role}_token" in data):
                names[role] = value
    return names


def _load_tokenizer_json(path: str) -> HuggingFaceTokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise CheckpointError(path, f"not a readable Hugging Face tokenizer.json ({e})") from None
    names = _special_names_from_configs(os.path.dirname(os.path.abspath(path)))
    for role, candidates in _KNOWN_SPECIALS.items():
        if role not in names:
            names[role] = next((c for c in candidates if tok.token_to_id(c) is not None), None)
    return HuggingFaceTokenizer(tok, path, names["bos"], names["eos"], names["unk"])


# ---------------------------------------------------------------------------------------------
# SentencePiece .model

def _load_sentencepiece(path: str) -> SentencePieceTokenizer:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.load(path)
    except (RuntimeError, OSError) as e:
        reason = f"not a SentencePiece model ({str(e).strip()})"
        if os.path.basename(path) == "tokenizer.model":
            reason += "; Llama-3's tokenizer.model is a tiktoken file: use its tokenizer.json instead"
        raise CheckpointError(path, reason) from None
    return SentencePieceTokenizer(processor, path)


# ---------------------------------------------------------------------------------------------
# GGUF metadata

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


# GGUF metadata value types: struct format of the scalar ones; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_metadata(path: str) -> Dict[str, object]:
    """The ``tokenizer.*`` metadata of a GGUF file (versions 2 and 3), as Python values.

    Reads the key/value header only, sequentially: the gguf package's reader maps every
    array element to a numpy view and takes seconds on a 50k-token vocabulary.
    """
    with open(path, "rb") as f:
        def read(size: int) -> bytes:
            data = f.read(size)
            if len(data) != size:
                raise CheckpointError(path, "truncated GGUF metadata")
            return data

        def unpack(fmt: str) -> tuple:
            return struct.unpack("<" + fmt, read(struct.calcsize("<" + fmt)))

        def string() -> str:
            data = read(unpack("Q")[0])
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(path, f"GGUF metadata string is not UTF-8: {data[:40]!r}") from None

        def value(kind: int):
            if kind in _GGUF_SCALARS:
                return unpack(_GGUF_SCALARS[kind])[0]
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item_kind, count = unpack("IQ")
                if item_kind in _GGUF_SCALARS:
                    return list(unpack(f"{count}{_GGUF_SCALARS[item_kind]}"))
                return [value(item_kind) for _ in range(count)]
            raise CheckpointError(path, f"unknown GGUF value type {kind}")

        f.read(4)  # magic, checked by the caller
        version = unpack("I")[0]
        if version not in (2, 3):
            raise CheckpointError(path, f"unsupported GGUF version {version} (supported: 2, 3)")
        unpack("Q")  # tensor count
        out: Dict[str, object] = {}
        for _ in range(unpack("Q")[0]):
            key = string()
            item = value(unpack("I")[0])
            if key.startswith("tokenizer."):
                out[key] = item
    return out


def _load_gguf(path: str) -> Tokenizer:
    meta = _gguf_metadata(path)
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
        _proto_message(1, _proto_string(1, t) + _proto_float(2, s) + _proto_varint(3, k))
        for t, s, k in zip(tokens, scores, types)
    )
    trainer = _proto_varint(3, 2) + _proto_varint(4, len(tokens))  # model_type BPE, vocab size
    trainer += _proto_varint(35, int(_GGUF_TOKEN_BYTE in types))  # byte_fallback
    for role, (field_id, field_piece) in {"unk": (40, 45), "bos": (41, 46), "eos": (42, 47)}.items():
        i = meta.get(_GGUF_SPECIAL_KEYS[role])
        valid = isinstance(i, int) and 0 <= i < len(tokens)
        trainer += _proto_varint(field_id, i if valid else -1)
        if valid:
            trainer += _proto_string(field_piece, tokens[i])
    trainer += _proto_varint(43, -1)  # pad_id: LLaMA has none
    normalizer = _proto_string(1, "identity")
    normalizer += _proto_varint(3, int(bool(meta.get("tokenizer.ggml.add_space_prefix", True))))
    normalizer += _proto_varint(4, int(bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False))))
    normalizer += _proto_varint(5, 1)  # escape whitespaces as U+2581
    proto = pieces + _proto_message(2, trainer) + _proto_message(3, normalizer)
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.load_from_serialized_proto(proto)
    except RuntimeError as e:
        raise CheckpointError(path, f"the GGUF vocabulary is not a valid SentencePiece model ({e})") from None
    return SentencePieceTokenizer(processor, path)


# Just enough protobuf wire format to write a SentencePiece ModelProto without protobuf.
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 values are written as 10-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _proto_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)



def _proto_float(field: int, value: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", value)


def _proto_message(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _proto_string(field: int, value: str) -> bytes:
    return _proto_message(field, value.encode("utf-8"))


# ---------------------------------------------------------------------------------------------

def load_tokenizer(path: str) -> Tokenizer:
    """Loads the tokenizer at ``path``: a SentencePiece ``.model``, a ``tokenizer.json``, a
    folder holding either (tokenizer.json preferred), or a ``.gguf`` file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("tokenizer.json", "tokenizer.model"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return load_tokenizer(candidate)
        raise CheckpointError(path, "the folder holds neither tokenizer.json nor tokenizer.model")
    if not os.path.isfile(path):
        raise CheckpointError(path, "no such tokenizer file or folder")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _load_gguf(path)
    if path.endswith(".json"):
        return _load_tokenizer_json(path)
    if path.endswith(".model"):
        return _load_sentencepiece(path)
    raise CheckpointError(
        path, "unsupported tokenizer format: expected a SentencePiece .model, a tokenizer.json or a .gguf file"
    )
