"""``load_tokenizer``: the tokenizer an LLM ships with, from a SentencePiece ``.model``, a Hugging
Face ``tokenizer.json`` (or a folder holding either) or a GGUF file."""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

from ..models.common.checkpoint_errors import CheckpointError
from .gguf_vocabulary import load_gguf_tokenizer
from .tokenizer import HuggingFaceTokenizer, SentencePieceTokenizer, Tokenizer


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
        return load_gguf_tokenizer(path)
    if path.endswith(".json"):
        return _load_tokenizer_json(path)
    if path.endswith(".model"):
        return _load_sentencepiece(path)
    raise CheckpointError(
        path, "unsupported tokenizer format: expected a SentencePiece .model, a tokenizer.json or a .gguf file"
    )


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
