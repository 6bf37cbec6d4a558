"""The fairseq "decoder" of WavLLM: the LLM continuing the assembled prompt, with teacher forcing in
training and one token a step with a KV cache in fairseq's SequenceGenerator."""
from typing import Optional, Tuple

import torch
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor

from ..llama import LlamaModel, reorder_cache
from .encoder import keeps_every_row, select_rows


class WavLLMDecoder(FairseqIncrementalDecoder):
    """The LLM continuing the assembled prompt."""

    def __init__(self, dictionary, llm: LlamaModel):
        super().__init__(dictionary)
        self.llm = llm
        self.vocab_size = dictionary.vocab_size  # ids the tokenizer can produce; the pad id follows

    def _lora_weight(self, encoder_out) -> Optional[Tensor]:
        return encoder_out["lora_weight"][0] if encoder_out["lora_weight"] else None

    def forward(self, prev_output_tokens: Tensor, encoder_out=None, incremental_state=None, **unused):
        cache = self.get_incremental_state(incremental_state, "kv") if incremental_state is not None else None
        first_step = incremental_state is not None and cache is None and prev_output_tokens.shape[1] == 1
        repeats = repeated_rows(encoder_out) if first_step else None
        if repeats is None:
            return self._continue_prompt(prev_output_tokens, encoder_out, incremental_state, cache)
        # The first step of beam search: fairseq's generator has repeated every prompt beam times,
        # and identical rows give identical states, so each distinct prompt runs once and its cache
        # and logits are copied to its beams (a beam-5 prefill costs one prompt's forward, not five).
        first, source = repeats
        logits, extra = self._continue_prompt(prev_output_tokens.index_select(0, first),
                                              select_rows(encoder_out, first), incremental_state, None)
        self.reorder_incremental_state(incremental_state, source)
        return logits.index_select(0, source), extra

    def _continue_prompt(self, prev_output_tokens: Tensor, encoder_out, incremental_state, cache):
        prompt = encoder_out["prompt_embeds"][0]
        prompt_pad = encoder_out["prompt_padding_mask"][0]
        prompt_len = encoder_out["prompt_lengths"][0]
        lora_weight = self._lora_weight(encoder_out)
        # The first decoder input is a placeholder: the prompt's last position predicts the first token.
        tokens = prev_output_tokens[:, 1:]
        if cache is not None:
            tokens = tokens[:, -1:]
        bsz, n_new = tokens.shape
        new_embeds = self.llm.tok_embeddings(tokens.masked_fill(tokens >= self.vocab_size, 0))
        done = prev_output_tokens.shape[1] - 1 - n_new  # generated tokens already in the cache
        steps = torch.arange(n_new, device=tokens.device) + done
        token_positions = prompt_len[:, None] + steps[None, :]
        if cache is None:
            embeds = torch.cat([prompt.to(new_embeds.dtype), new_embeds], dim=1)
            prompt_positions = (torch.cumsum((~prompt_pad).long(), dim=1) - 1).clamp(min=0)
            positions = torch.cat([prompt_positions, token_positions], dim=1)
            key_pad = torch.cat([prompt_pad, prompt_pad.new_zeros(bsz, n_new)], dim=1)
            past = None
        else:
            embeds, positions, past = new_embeds, token_positions, cache["past"]
            key_pad = torch.cat([prompt_pad, prompt_pad.new_zeros(bsz, done + n_new)], dim=1)
        hidden, new_past = self.llm(
            embeds, positions, key_pad, past_key_values=past, lora_weight=lora_weight,
            use_cache=incremental_state is not None,
        )
        hidden = hidden[:, -(n_new + 1):] if cache is None else hidden
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "kv", {"past": new_past})
            hidden = hidden[:, -1:]
        return self.output_layer(hidden), {"attn": None}

    def output_layer(self, hidden: Tensor) -> Tensor:
        logits = self.llm.output_logits(hidden)[..., : self.vocab_size]
        pad_column = logits.new_full(logits.shape[:-1] + (1,), float("-inf"))
        return torch.cat([logits, pad_column], dim=-1)

    def reorder_incremental_state_scripting(self, incremental_state, new_order: Tensor):
        # fairseq's version walks every submodule (the whole LLM, after every step) looking for
        # caches to reorder; the only cache is this decoder's.
        self.reorder_incremental_state(incremental_state, new_order)

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        cache = self.get_incremental_state(incremental_state, "kv")
        if cache is not None and not keeps_every_row(new_order, cache["past"][0][0].shape[0]):
            self.set_incremental_state(incremental_state, "kv", {"past": reorder_cache(cache["past"], new_order)})

    def max_positions(self):
        return self.llm.cfg.max_seq_len


def repeated_rows(encoder_out) -> Optional[Tuple[Tensor, Tensor]]:
    """(first row of each distinct source row, each row's index among those) when rows repeat a
    source row, as after beam search's expansion; None when every row is distinct."""
    if "source_rows" not in encoder_out:
        return None
    rows = encoder_out["source_rows"][0]
    distinct, source = torch.unique(rows, return_inverse=True)
    if distinct.numel() == rows.numel():
        return None
    order = torch.arange(rows.numel(), device=rows.device)
    first = torch.full_like(distinct, rows.numel()).scatter_reduce(0, source, order, reduce="amin")
    return first, source
