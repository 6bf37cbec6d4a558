"""A fairseq Dictionary that mirrors an LLM tokenizer's vocabulary id for id.

LLaMA-family vocabularies have no padding token, so one symbol is appended after the
last tokenizer id; the model gives it no probability mass. ``eos`` is the template's
end-of-turn token, which is what generation stops on.
"""
from __future__ import annotations

from fairseq.data import Dictionary

PAD_SYMBOL = "<wavllm_pad>"


class TokenizerDictionary(Dictionary):
    def __init__(self, tokenizer, eos_id: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.symbols = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
        self.symbols.append(PAD_SYMBOL)
        self.count = [1] * len(self.symbols)
        # Duplicate surface forms (possible in byte-level vocabularies) keep their first id.
        self.indices = {}
        for i, s in enumerate(self.symbols):
            self.indices.setdefault(s, i)
        self.pad_index = tokenizer.vocab_size
        self.eos_index = eos_id
        self.bos_index = tokenizer.bos_id if tokenizer.bos_id is not None else eos_id
        self.unk_index = tokenizer.unk_id if tokenizer.unk_id is not None else self.pad_index
        self.nspecial = 0

    @property
    def vocab_size(self) -> int:
        """Ids the LLM can emit (the padding symbol excluded)."""
        return self.pad_index

    def string(self, tensor, bpe_symbol=None, escape_unk=False, extra_symbols_to_ignore=None,
               unk_string=None, include_eos=False, separator=" "):
        """Detokenized text, as fairseq-generate prints and scores it."""
        if tensor is None:
            return ""
        if hasattr(tensor, "dim") and tensor.dim() == 2:
            return "\n".join(self.string(t) for t in tensor)
        skip = {self.pad_index, self.eos_index} | set(extra_symbols_to_ignore or ())
        ids = [int(i) for i in tensor if int(i) not in skip]
        return self.tokenizer.decode(ids).strip()
