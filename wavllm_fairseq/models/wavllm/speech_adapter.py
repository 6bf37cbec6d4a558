"""From encoder states to LLM inputs (SPEC section 1).

Per stream: Conv1d subsampler (4x, GLU) -> bottleneck adapter -> projection.
Then the two streams are cut to the shorter one and fused by a linear layer.
All widths derive from the encoder and LLM widths (see :class:`AdapterWidths`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence


@dataclass(frozen=True)
class AdapterWidths:
    """Widths of the speech branches; the released model's values in brackets (LLM width 4096)."""

    speech: int
    """Subsampler output and adapter width [1024 = LLM width / 4]."""
    bottleneck: int
    """Adapter bottleneck [512 = speech / 2]."""
    projection: int
    """Per-stream projection before fusion [2048 = LLM width / 2]."""
    whisper_mid: int
    """Whisper subsampler hidden width [1280 = Whisper width]."""
    wavlm_mid: int
    """WavLM subsampler hidden width [512 = speech / 2]."""

    @classmethod
    def derive(cls, whisper_dim: int, llm_dim: int) -> "AdapterWidths":
        speech = llm_dim // 4
        return cls(speech, speech // 2, llm_dim // 2, whisper_dim, speech // 2)


def subsampled_lengths(lengths: Tensor, n_convs: int = 2) -> Tensor:
    """Length after each k=3, s=2, p=1 conv: floor((L - 1) / 2 + 1)."""
    for _ in range(n_convs):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """True where a position lies beyond its row's length."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class Conv1dSubsampler(nn.Module):
    """Two strided convolutions, each followed by GLU: 4x fewer frames."""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int):
        super().__init__()
        self.conv_layers = nn.ModuleList(
            [
                nn.Conv1d(in_dim, mid_dim, 3, stride=2, padding=1),
                nn.Conv1d(mid_dim // 2, out_dim * 2, 3, stride=2, padding=1),
            ]
        )

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x: B x T x C -> B x T' x out. Padding is zeroed before each conv so it cannot leak in."""
        x = x.transpose(1, 2)
        for conv in self.conv_layers:
            x = x.masked_fill(padding_mask(lengths, x.shape[-1])[:, None, :], 0.0)
            x = F.glu(conv(x), dim=1)
            lengths = subsampled_lengths(lengths, 1)
        return x.transpose(1, 2), lengths


class BottleneckAdapter(nn.Module):
    """x + LayerNorm(up(GELU(down(x)))): the norm sits on the branch."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(self.up(F.gelu(self.down(x))))


class SpeechBranch(nn.Module):
    """Subsampler, adapter and projection of one encoder stream."""

    def __init__(self, in_dim: int, mid_dim: int, widths: AdapterWidths):
        super().__init__()
        self.subsample = Conv1dSubsampler(in_dim, mid_dim, widths.speech)
        self.adapter = BottleneckAdapter(widths.speech, widths.bottleneck)
        self.projector = nn.Linear(widths.speech, widths.projection)

    def forward(self, x: Tensor, lengths: Tensor, windows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """windows (B,), optional: row i holds windows[i] equally long windows, each subsampled
        on its own and then joined (the released WavLLM's handling of Whisper's 30-s windows)."""
        if windows is None or int(windows.max()) == 1:
            x, lengths = self.subsample(x, lengths)
        else:
            x, lengths = self._subsample_windows(x, lengths, windows)
        return self.projector(self.adapter(x)), lengths

    def _subsample_windows(self, x: Tensor, lengths: Tensor, windows: Tensor) -> Tuple[Tensor, Tensor]:
        counts, sizes = windows.tolist(), torch.div(lengths, windows, rounding_mode="floor").tolist()
        pieces = [x[row, w * size:(w + 1) * size] for row, (count, size) in enumerate(zip(counts, sizes))
                  for w in range(count)]
        piece_lengths = torch.tensor([piece.shape[0] for piece in pieces], device=x.device)
        out, out_lengths = self.subsample(pad_sequence(pieces, batch_first=True), piece_lengths)
        rows, first = [], 0
        for count in counts:
            rows.append(torch.cat([out[p, : out_lengths[p]] for p in range(first, first + count)]))
            first += count
        return pad_sequence(rows, batch_first=True), torch.tensor([len(r) for r in rows], device=x.device)


class LayerWeightedSum(nn.Module):
    """Softmax-weighted sum of all encoder hidden states (WavLM)."""

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))

    def forward(self, states: List[Tensor]) -> Tensor:
        w = torch.softmax(self.weights, dim=0)
        return sum(wi * s for wi, s in zip(w, states))


class SpeechFusion(nn.Module):
    """Aligns the two streams by frame index (cut to the shorter) and maps them to the LLM width."""

    def __init__(self, widths: AdapterWidths, llm_dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * widths.projection, llm_dim)

    def forward(
        self, semantic: Tensor, semantic_lengths: Tensor, acoustic: Tensor, acoustic_lengths: Tensor
    ) -> Tuple[Tensor, Tensor]:
        t = min(semantic.shape[1], acoustic.shape[1])
        lengths = torch.minimum(semantic_lengths, acoustic_lengths).clamp(max=t)
        fused = self.proj(torch.cat([semantic[:, :t], acoustic[:, :t]], dim=-1))
        return fused.masked_fill(padding_mask(lengths, t)[..., None], 0.0), lengths
