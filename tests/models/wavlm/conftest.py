"""Shared WavLM test inputs: random tiny transformers WavLM models saved as Hugging Face folders,
and a writer of the authors' ``.pt`` format built from the key table's inverse."""
from __future__ import annotations

from typing import Dict, List, Optional

import pytest
import torch

from wavllm_fairseq.models.wavlm import WavLMEncoder
from wavllm_fairseq.models.wavlm.checkpoint import authors_keys, rename_key

LENGTHS = [401, 16000, 16001, 7000]

# Base-like (group norm, post-norm) and Large-like (layer norm everywhere, pre-norm): tiny widths,
# the real 7-layer CNN. The CNN is narrower than the encoder so both formats have the projection.
HF_KINDS = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True),
}


def hf_config(kind: str, conv_width: int = 24):
    import transformers

    return transformers.WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=[conv_width] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        num_buckets=32, max_bucket_distance=64, **HF_KINDS[kind])


def random_hf_model(kind: str, seed: int = 0, conv_width: int = 24):
    """transformers WavLMModel with every parameter moved off its init (norms, gate constants)."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.WavLMModel(hf_config(kind, conv_width)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module", params=sorted(HF_KINDS))
def hf_folder(request, tmp_path_factory):
    """(kind, transformers model, saved folder)."""
    model = random_hf_model(request.param)
    folder = tmp_path_factory.mktemp(f"hf_{request.param}")
    model.save_pretrained(str(folder))
    return request.param, model, str(folder)


def waves_batch(lengths: List[int], seed: int = 1):
    """Zero-padded B x T noise-plus-tone waves and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        t = torch.arange(n) / 16000
        batch[i, :n] = 0.3 * torch.sin(2 * torch.pi * (150 + 50 * i) * t) + 0.1 * torch.randn(n, generator=generator)
    return batch, torch.tensor(lengths)


def authors_checkpoint(model: WavLMEncoder, extra: Optional[Dict[str, torch.Tensor]] = None) -> dict:
    """The authors' ``{"cfg", "model"}`` dict holding ``model``'s weights under their names."""
    cfg = model.cfg
    state = {}
    for key, value in model.state_dict().items():
        name = rename_key(key, authors_keys(cfg.extractor_mode), to_ours=False)
        assert name is not None, key
        if name == "encoder.pos_conv.0.weight":  # the authors keep weight norm: weight = g * v / ||v||
            state["encoder.pos_conv.0.weight_g"] = value.norm(dim=(0, 1), keepdim=True)
            state["encoder.pos_conv.0.weight_v"] = value.clone()
        else:
            state[name] = value.clone()
    state["mask_emb"] = torch.rand(cfg.encoder_embed_dim)
    state.update(extra or {})
    layers = cfg.conv_feature_layers
    conv = f"[{layers[0]}] + [{layers[1]}] * {len(layers) - 3} + [{layers[-1]}] * 2"
    assert layers[1:-2] == [layers[1]] * (len(layers) - 3) and layers[-2:] == [layers[-1]] * 2
    authors_cfg = dict(
        extractor_mode=cfg.extractor_mode, encoder_layers=cfg.encoder_layers,
        encoder_embed_dim=cfg.encoder_embed_dim, encoder_ffn_embed_dim=cfg.encoder_ffn_embed_dim,
        encoder_attention_heads=cfg.encoder_attention_heads, activation_fn="gelu",
        layer_norm_first=cfg.layer_norm_first, conv_feature_layers=conv.replace(" ", ""),
        conv_bias=cfg.conv_bias, feature_grad_mult=1.0, normalize=cfg.normalize_waveform, dropout=0.1,
        attention_dropout=0.1, mask_prob=0.65, conv_pos=cfg.conv_pos, conv_pos_groups=cfg.conv_pos_groups,
        relative_position_embedding=cfg.relative_position_embedding, num_buckets=cfg.num_buckets,
        max_distance=cfg.max_distance, gru_rel_pos=cfg.gru_rel_pos,
    )
    return {"cfg": authors_cfg, "model": state}
