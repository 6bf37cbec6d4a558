"""Parameter counts of the paper-size model (built on the meta device) against formulas from the layer sizes."""
from types import SimpleNamespace

import pytest
import torch
from fairseq.optim import build_optimizer
from fairseq.optim.adam import FairseqAdamConfig
from omegaconf import OmegaConf

from wavllm_fairseq.models.wavllm import ARCHITECTURES, WavLLMConfig, WavLLMModel

LLAMA2_7B = 6_738_415_616
"""Published parameter count of LLaMA-2-7B (tied nowhere, vocabulary 32000)."""


def linear(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def layer_norm(d):
    return 2 * d


def whisper_encoder(n_mels=80, d=1280, layers=32):
    """Whisper large-v2's audio encoder; its sinusoidal positions are a buffer, not a parameter."""
    block = (layer_norm(d) + linear(d, d) + linear(d, d, bias=False) + linear(d, d) + linear(d, d)
             + layer_norm(d) + linear(d, 4 * d) + linear(4 * d, d))
    convs = (n_mels * d * 3 + d) + (d * d * 3 + d)
    return convs + layers * block + layer_norm(d)


def wavlm_base_plus(c=512, d=768, ffn=3072, heads=12, layers=12, buckets=320, pos_kernel=128, pos_groups=16):
    """WavLM Base+: bias-free CNN (group norm after the first conv), projection, positional conv
    (weight norm folded), post-norm layers with a gated relative position bias (table in layer 0)."""
    cnn = 1 * c * 10 + 2 * c + 4 * (c * c * 3) + 2 * (c * c * 2)
    front = cnn + layer_norm(c) + linear(c, d) + (d * (d // pos_groups) * pos_kernel + d) + layer_norm(d)
    gate = linear(d // heads, 8) + heads
    layer = 4 * linear(d, d) + gate + layer_norm(d) + linear(d, ffn) + linear(ffn, d) + layer_norm(d)
    return front + layers * layer + buckets * heads


def speech_adapters(llm=4096):
    """SPEC section 1: Whisper branch 1280 -> (mid 1280) -> 1024, WavLM branch 768 -> (mid 512) -> 1024,
    adapters 1024 -> 512 -> 1024, projections 1024 -> 2048, fusion 4096 -> LLM width, 13 layer weights."""
    def branch(n_in, mid):
        subsample = (n_in * mid * 3 + mid) + ((mid // 2) * 2048 * 3 + 2048)
        adapter = linear(1024, 512) + linear(512, 1024) + layer_norm(1024)
        return subsample + adapter + linear(1024, 2048)
    return branch(1280, 1280) + branch(768, 512) + linear(4096, llm) + 13


def lora(rank=32, layers=32, d=4096):
    """r x in (A) plus out x r (B) on each of q, k, v, o (all 4096 -> 4096 in LLaMA-2-7B)."""
    return 4 * layers * rank * (d + d)


def prompt_adapter(d=4096):
    return linear(d, d // 4) + linear(d // 4, d) + linear(d, 1)


def build_7b(**overrides):
    cfg = WavLLMConfig(**{**ARCHITECTURES["wavllm_7b"], **overrides})
    task = SimpleNamespace(target_dictionary=SimpleNamespace(vocab_size=32000))
    with torch.device("meta"):
        return WavLLMModel.build_model(cfg, task)


def counts(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.fixture(scope="module")
def stage1():
    return build_7b()


@pytest.mark.parametrize("component, expected", [
    ("encoder.whisper", whisper_encoder()),
    ("encoder.wavlm", wavlm_base_plus()),
    ("decoder.llm", LLAMA2_7B + lora()),
])
def test_each_pretrained_component_matches_its_formula(stage1, component, expected):
    module = stage1.get_submodule(component)
    assert sum(p.numel() for p in module.parameters()) == expected


def test_stage1_total_and_trainable_counts(stage1):
    total, trainable = counts(stage1)
    expected_trainable = speech_adapters() + lora()
    assert trainable == expected_trainable
    assert total == whisper_encoder() + wavlm_base_plus() + LLAMA2_7B + expected_trainable
    # The frozen parts hold no trainable parameter at all.
    for frozen in (stage1.encoder.whisper, stage1.encoder.wavlm):
        assert not any(p.requires_grad for p in frozen.parameters())
    base = [n for n, p in stage1.decoder.llm.named_parameters() if not (n.endswith(".lora_A") or n.endswith(".lora_B"))]
    assert base and not any(stage1.decoder.llm.get_parameter(n).requires_grad for n in base)


def test_stage2_adds_exactly_the_trainable_prompt_adapter(stage1):
    total1, trainable1 = counts(stage1)
    total2, trainable2 = counts(build_7b(prompt_adapter=True))
    assert trainable2 - trainable1 == total2 - total1 == prompt_adapter()


def test_optimizer_built_as_fairseq_does_gets_only_trainable_parameters(stage1):
    # fairseq's Trainer hands the optimizer filter(lambda p: p.requires_grad, model.parameters()).
    params = list(filter(lambda p: p.requires_grad, stage1.parameters()))
    optimizer = build_optimizer(OmegaConf.structured(FairseqAdamConfig(_name="adam", lr=[1e-4], tpu=False)), params)
    given = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for n, p in stage1.named_parameters() if p.requires_grad}
    frozen = {id(p) for n, p in stage1.named_parameters() if not p.requires_grad}
    assert given == trainable
    assert not given & frozen
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == speech_adapters() + lora()


def test_the_imported_release_takes_two_bytes_a_parameter_in_bfloat16():
    """The released model as import_release builds it: stage 2 at the paper's size (WavLM Base has
    Base+'s shapes), every weight stored in bfloat16 when decoding in bfloat16."""
    model = build_7b(prompt_adapter=True).to(torch.bfloat16)
    expected = whisper_encoder() + wavlm_base_plus() + LLAMA2_7B + speech_adapters() + lora() + prompt_adapter()
    assert sum(p.numel() * p.element_size() for p in model.parameters()) == 2 * expected == 15_088_606_716
