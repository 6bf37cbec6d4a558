"""LoRA (init, scaling, merging) and the prompt-aware LoRA weight adapter."""
from __future__ import annotations

import pytest
import torch

from wavllm_fairseq.models.llama import LLAMA_PRESETS, LlamaModel, LoraConfig
from wavllm_fairseq.models.llama.lora import LoraLinear
from wavllm_fairseq.models.wavllm.prompt_adapter import PromptAwareLoraWeight

ALL_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
CFG = LLAMA_PRESETS["tiny_test"]  # GQA: k / v write 32 features, the model is 64 wide


def make(targets=("q", "k", "v", "o"), rank=4, alpha=8.0, seed=0) -> LlamaModel:
    torch.manual_seed(seed)
    return LlamaModel(CFG, LoraConfig(rank=rank, alpha=alpha, dropout=0.0, targets=targets)).eval()


def randomize_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.lora_layers():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.5)


def forward(model, ids, **kwargs):
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        hidden, _ = model(model.tok_embeddings(ids), positions, None, **kwargs)
    return hidden


IDS = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(3))


def test_lora_starts_as_the_base_model_and_only_lora_trains():
    model = make(ALL_TARGETS)
    assert all((layer.lora_B == 0).all() and layer.lora_A.abs().sum() > 0 for layer in model.lora_layers())
    base = forward(model, IDS, use_lora=False)
    assert torch.equal(forward(model, IDS), base)
    assert torch.equal(forward(model, IDS, lora_weight=torch.rand(2, CFG.dim) * 3), base)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    assert len(trainable) == 2 * len(ALL_TARGETS) * CFG.n_layers


def test_lora_gradients_reach_the_adapters():
    model = make()
    model.train()
    positions = torch.arange(6).expand(2, 6)
    hidden, _ = model(model.tok_embeddings(IDS), positions, None)
    model.output_logits(hidden).logsumexp(-1).sum().backward()
    # B starts at zero, so B gets the gradient first and A's is zero.
    assert all(layer.lora_B.grad.abs().sum() > 0 for layer in model.lora_layers())
    assert model.layers[0].attention.wq.weight.grad is None


def test_alpha_over_r_scaling_matches_explicit_update():
    layer = LoraLinear(8, 6, rank=2, alpha=6.0, dropout=0.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 5, 8)
    expected = x @ layer.weight.T + (x @ layer.lora_A.T @ layer.lora_B.T) * 3.0
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_prompt_weight_gates_the_width_d_side():
    """q (64 -> 64) is gated on its output; k under GQA (64 -> 32) on its input."""
    model = make(("q", "k"))
    randomize_lora(model)
    w = torch.rand(2, CFG.dim) * 3
    x = torch.randn(2, 5, CFG.dim)
    q, k = model.layers[0].attention.wq, model.layers[0].attention.wk
    with torch.no_grad():
        assert torch.allclose(q(x, w), x @ q.weight.T + (x @ q.lora_A.T @ q.lora_B.T) * w[:, None], atol=1e-5)
        assert torch.allclose(k(x, w), x @ k.weight.T + (x * w[:, None]) @ k.lora_A.T @ k.lora_B.T, atol=1e-5)


def test_constant_prompt_weight_equals_plain_lora_everywhere():
    model = make(ALL_TARGETS, rank=4, alpha=6.0)
    randomize_lora(model)
    plain = forward(model, IDS)
    constant = forward(model, IDS, lora_weight=torch.full((2, CFG.dim), 6.0 / 4))
    assert (plain - forward(model, IDS, use_lora=False)).abs().max() > 1e-2  # LoRA does something
    assert (plain - constant).abs().max() < 1e-5


def test_merged_equals_unmerged_and_refuses_prompt_weights():
    model = make(ALL_TARGETS)
    randomize_lora(model)
    base_q = model.layers[1].attention.wq.weight.clone()
    unmerged = forward(model, IDS)
    model.merge_lora()
    assert (forward(model, IDS) - unmerged).abs().max() < 1e-5
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        forward(model, IDS, lora_weight=torch.ones(2, CFG.dim))
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        forward(model, IDS, use_lora=False)
    model.unmerge_lora()
    assert torch.allclose(model.layers[1].attention.wq.weight, base_q, atol=1e-6)
    assert (forward(model, IDS) - unmerged).abs().max() < 1e-5


def test_lora_config_validates_targets():
    with pytest.raises(ValueError, match="unknown LoRA targets \\['qkv'\\]"):
        LoraConfig(targets=("q", "qkv"))


# ---------------------------------------------------------------- prompt-aware weight

def test_prompt_adapter_range_and_formula():
    torch.manual_seed(0)
    adapter = PromptAwareLoraWeight(64)
    hidden = torch.randn(3, 7, 64) * 20  # large, so both ReLU and the clamp at 3 are active
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, :4] = False
    weight = adapter(hidden, valid)
    assert weight.shape == (3, 64)
    assert weight.min() == 0 and weight.max() == 3.0
    # The paper's formula, row by row over the real tokens only.
    for i in range(3):
        s = adapter.fc2(torch.nn.functional.gelu(adapter.fc1(hidden[i][valid[i]])))
        a = torch.softmax(adapter.score(s)[:, 0], dim=0)
        assert torch.allclose(weight[i], (a[:, None] * s).sum(0).relu().clamp(max=3), atol=1e-5)


def test_prompt_adapter_ignores_padding():
    torch.manual_seed(0)
    adapter = PromptAwareLoraWeight(64)
    hidden = torch.randn(1, 5, 64)
    alone = adapter(hidden, torch.ones(1, 5, dtype=torch.bool))
    # The same row left-padded with 3 slots of arbitrary content, beside a longer row.
    padded = torch.cat([torch.randn(1, 3, 64) * 100, hidden], dim=1)
    batch = torch.cat([padded, torch.randn(1, 8, 64)])
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[0, :3] = False
    assert torch.allclose(adapter(batch, valid)[0], alone[0], atol=1e-6)
    with pytest.raises(ValueError, match="at least one real"):
        adapter(hidden, torch.zeros(1, 5, dtype=torch.bool))
