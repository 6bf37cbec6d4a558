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

from abc import ABC, abstractmethod
from typing import Iterable, List, Optional

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
