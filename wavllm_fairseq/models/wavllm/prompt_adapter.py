"""WavLLM's prompt-aware LoRA weight adapter (stage 2): one gate per LLM feature from the instruction."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_WEIGHT = 3.0
"""Upper clamp of the weight, as in the paper."""


class PromptAwareLoraWeight(nn.Module):
    """s = fc2(GELU(fc1(H))), a = softmax over real tokens of w^T s, weight = clamp(ReLU(sum a s), max=3).

    H is the frozen LLM's last hidden state (before the final norm) over the instruction alone.
    Padding is excluded from the pooling, so a row's weight does not depend on its batch mates.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // 4)
        self.fc2 = nn.Linear(dim // 4, dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, hidden: Tensor, valid_mask: Tensor) -> Tensor:
        """hidden: B x T x D; valid_mask: B x T, True for real tokens. Returns B x D."""
        if not bool(valid_mask.any(dim=1).all()):
            raise ValueError("every row needs at least one real prompt token for the LoRA weight")
        s = self.fc2(F.gelu(self.fc1(hidden.to(self.fc1.weight.dtype))))
        logits = self.score(s).squeeze(-1).masked_fill(~valid_mask, float("-inf"))
        attention = torch.softmax(logits.float(), dim=1).to(s.dtype)
        pooled = (attention[..., None] * s).sum(dim=1)
        return F.relu(pooled).clamp(max=MAX_WEIGHT)
