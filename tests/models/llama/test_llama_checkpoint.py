"""Checkpoint loading details: sharded / .bin Hugging Face folders, dtypes, and errors that name
the file, the key and the shapes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig as HFConfig
from transformers import LlamaForCausalLM

from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError
from wavllm_fairseq.models.llama import LoraConfig, load_llama

IDS = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    cfg = HFConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=100, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def hf_folder(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    return tmp_path / "hf"


def logits(model):
    with torch.no_grad():
        hidden, _ = model(model.tok_embeddings(IDS), torch.arange(IDS.shape[1])[None], None)
        return model.output_logits(hidden).float()


def reference(hf_model):
    with torch.no_grad():
        return hf_model(IDS).logits


def test_sharded_safetensors_and_pytorch_bin(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert (logits(load_llama(str(tmp_path / "sharded"))) - reference(hf_model)).abs().max() < 1e-4
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    torch.save(hf_model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert (logits(load_llama(str(tmp_path / "bin"))) - reference(hf_model)).abs().max() < 1e-4


def test_dtype_and_lora_after_meta_device_construction(hf_model, hf_folder):
    model = load_llama(str(hf_folder), lora=LoraConfig(rank=4, targets=("q", "v", "down")), dtype=torch.bfloat16)
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in model.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"layers.{i}.{m}.lora_{ab}" for i in range(2) for ab in "AB"
                         for m in ("attention.wq", "attention.wv", "feed_forward.w2")}
    assert all(float(layer.lora_B.detach().abs().sum()) == 0 and float(layer.lora_A.detach().abs().sum()) > 0
               for layer in model.lora_layers())
    assert (logits(model) - reference(hf_model)).abs().max() < 0.1  # bfloat16 rounding only


def test_truncated_files(hf_model, hf_folder, tmp_path):
    weights = hf_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_llama(str(hf_folder))
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "params.json").write_text(json.dumps(dict(dim=32, n_layers=2, n_heads=4)))
    shard = tmp_path / "meta" / "consolidated.00.pth"
    torch.save({"tok_embeddings.weight": torch.zeros(100, 32)}, shard)
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="consolidated.00.pth"):
        load_llama(str(tmp_path / "meta"))


def test_truncated_gguf(smollm_gguf_path, tmp_path):
    with open(smollm_gguf_path, "rb") as f:
        head = f.read(2_000_000)  # the header and part of the tensor data
    path = tmp_path / "cut.gguf"
    path.write_bytes(head)
    with pytest.raises(CheckpointError, match="cut.gguf"):
        load_llama(str(path))


def test_missing_key(hf_folder):
    weights = hf_folder / "model.safetensors"
    state = load_file(weights)
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, weights)
    with pytest.raises(CheckpointError) as err:
        load_llama(str(hf_folder))
    assert err.value.key == "layers.1.feed_forward.w3.weight" and str(hf_folder) in str(err.value)


def test_shape_mismatch_names_file_key_and_shapes(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["intermediate_size"] = 64
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_llama(str(hf_folder))
    e = err.value
    assert e.path.endswith("model.safetensors") and e.key.startswith("model.layers.0.mlp.")
    assert {tuple(e.expected_shape), tuple(e.got_shape)} in ({(64, 32), (48, 32)}, {(32, 64), (32, 48)})
    assert "expected shape" in str(e)


def test_unexpected_key_and_unknown_layouts(hf_folder, tmp_path):
    weights = hf_folder / "model.safetensors"
    state = load_file(weights)
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    save_file(state, weights)
    with pytest.raises(CheckpointError, match="unexpected tensor.*q_proj.bias"):
        load_llama(str(hf_folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither Meta"):
        load_llama(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no such file"):
        load_llama(str(tmp_path / "absent"))
    (tmp_path / "x.bin").write_bytes(b"not a gguf")
    with pytest.raises(CheckpointError, match="GGUF magic"):
        load_llama(str(tmp_path / "x.bin"))


def test_save_llama_meta_round_trip(tmp_path):
    from wavllm_fairseq.models.llama import LLAMA_PRESETS, LlamaModel, load_llama, save_llama_meta

    torch.manual_seed(0)
    model = LlamaModel(LLAMA_PRESETS["tiny_test"]).eval()
    save_llama_meta(model, str(tmp_path / "lm"))
    loaded = load_llama(str(tmp_path / "lm")).eval()
    assert loaded.cfg == model.cfg
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    pos = torch.arange(9).expand(2, 9)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    with torch.no_grad():
        a = model.output_logits(model(model.tok_embeddings(ids), pos, pad)[0])
        b = loaded.output_logits(loaded(loaded.tok_embeddings(ids), pos, pad)[0])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
