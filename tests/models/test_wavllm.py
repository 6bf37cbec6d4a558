"""The composed model on the tiny architecture: cache, beams, batching, loss mask, checkpoints."""
import copy

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

from wavllm_fairseq.criterions.wavllm_cross_entropy import WavLLMCrossEntropy
from wavllm_fairseq.models.wavllm import ARCHITECTURES, WavLLMConfig, WavLLMModel
from wavllm_fairseq.tasks.wavllm import WavLLMTask, WavLLMTaskConfig


@pytest.fixture(scope="module")
def task(speech_corpus):
    cfg = WavLLMTaskConfig(data=str(speech_corpus), tokenizer_path=str(speech_corpus / "spm.model"), seed=1)
    t = WavLLMTask.setup_task(cfg)
    t.load_dataset("train")
    return t


def build(task, **overrides):
    torch.manual_seed(0)
    cfg = WavLLMConfig(**{**ARCHITECTURES["wavllm_tiny"], **overrides})
    model = WavLLMModel.build_model(cfg, task)
    # LoRA B starts at zero; give it values so that LoRA paths are exercised.
    for name, p in model.named_parameters():
        if "lora" in name.lower():
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def batch(task, indices):
    ds = task.dataset("train")
    return ds.collater([ds[i] for i in indices])


def mixed(task):
    """Two speech rows of different lengths and one text-only row."""
    ds = task.dataset("train")
    speech = [i for i, e in enumerate(ds.examples) if e.row.with_speech]
    text = [i for i, e in enumerate(ds.examples) if not e.row.with_speech]
    return [speech[0], speech[5], text[0]]


def test_batch_equals_items_alone(task):
    model = build(task, prompt_adapter=True)
    idx = mixed(task)
    b = batch(task, idx)
    with torch.no_grad():
        logits, _ = model(**b["net_input"])
        for row, i in enumerate(idx):
            one = batch(task, [i])
            alone, _ = model(**one["net_input"])
            n = alone.shape[1]
            torch.testing.assert_close(logits[row, :n, :-1], alone[0, :, :-1], atol=1e-4, rtol=1e-4)


def test_logits_cover_exactly_the_target_and_loss_ignores_the_prompt(task):
    model = build(task)
    b = batch(task, mixed(task))
    logits, _ = model(**b["net_input"])
    assert logits.shape[:2] == b["target"].shape
    crit = WavLLMCrossEntropy(task)
    loss, sample_size, log = crit(model, b)
    mask = b["target"].ne(task.target_dictionary.pad())
    manual = torch.nn.functional.cross_entropy(
        logits[..., :-1][mask].float(), b["target"][mask], reduction="sum")
    torch.testing.assert_close(loss, manual)
    assert sample_size == int(mask.sum()) == b["ntokens"]
    assert log["n_task_asr"] == 2 and log["n_task_text"] == 1
    # The prompt's tokens never appear as targets: every target ends with the end-of-turn id.
    eos = task.target_dictionary.eos()
    for row, length in enumerate(mask.sum(1).tolist()):
        assert b["target"][row, length - 1] == eos


def encode(model, sample):
    """The encoder's output for a collated sample (its net input less the decoder's tokens)."""
    return model.encoder(**{k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"})


def greedy_without_cache(model, sample, steps):
    enc = encode(model, sample)
    eos = model.decoder.dictionary.eos()
    tokens = torch.full((sample["id"].numel(), 1), eos)
    all_logits = []
    for _ in range(steps):
        logits, _ = model.decoder(tokens, encoder_out=enc)
        all_logits.append(logits[:, -1])
        tokens = torch.cat([tokens, logits[:, -1, :-1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, 1:], torch.stack(all_logits, 1)


@pytest.mark.parametrize("prompt_adapter", [False, True])
def test_kv_cache_decoding_equals_full_recomputation(task, prompt_adapter):
    model = build(task, prompt_adapter=prompt_adapter)
    b = batch(task, mixed(task))
    with torch.no_grad():
        ref_tokens, ref_logits = greedy_without_cache(model, b, 6)
        enc = encode(model, b)
        state = {}
        tokens = torch.full((3, 1), model.decoder.dictionary.eos())
        for step in range(6):
            logits, _ = model.decoder(tokens, encoder_out=enc, incremental_state=state)
            torch.testing.assert_close(logits[:, -1], ref_logits[:, step], atol=1e-4, rtol=1e-4)
            tokens = torch.cat([tokens, ref_tokens[:, step : step + 1]], dim=1)


def test_beam_one_equals_greedy(task):
    model = build(task)
    b = batch(task, mixed(task))
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_b=8, min_len=8)
    with torch.no_grad():
        hypos = gen.generate([model], b)
        ref_tokens, _ = greedy_without_cache(model, b, 8)
    for row, h in enumerate(hypos):
        assert h[0]["tokens"][:8].tolist() == ref_tokens[row].tolist()


def test_beam_search_in_a_batch_equals_items_alone(task):
    """Beam reordering of the KV cache and of the prompt-aware weight is right."""
    model = build(task, prompt_adapter=True)
    idx = mixed(task)
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=6)
    with torch.no_grad():
        together = gen.generate([model], batch(task, idx))
        for row, i in enumerate(idx):
            alone = gen.generate([model], batch(task, [i]))
            assert together[row][0]["tokens"].tolist() == alone[0][0]["tokens"].tolist()
            assert abs(float(together[row][0]["score"]) - float(alone[0][0]["score"])) < 1e-4


@pytest.mark.parametrize("prompt_adapter", [False, True])
def test_beam_search_prefills_each_prompt_once_and_finds_what_a_prefill_per_beam_finds(task, prompt_adapter):
    model = build(task, prompt_adapter=prompt_adapter)
    b = batch(task, mixed(task))
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=6)
    prefill_rows = []  # the shapes of the decoder's LLM calls (the prompt adapter's call caches nothing)
    hook = model.decoder.llm.register_forward_hook(
        lambda m, args, kwargs, out: prefill_rows.append(args[0].shape) if kwargs.get("use_cache") else None,
        with_kwargs=True)
    with torch.no_grad():
        once = gen.generate([model], b)
        hook.remove()
        encode_with_rows = model.encoder.forward
        model.encoder.forward = lambda *a, **k: {n: v for n, v in encode_with_rows(*a, **k).items() if n != "source_rows"}
        per_beam = gen.generate([model], b)
        del model.encoder.forward
    assert prefill_rows[0][0] == 3 and prefill_rows[0][1] > 1  # three prompts, not twelve beams
    assert all(rows == 12 and positions == 1 for rows, positions, _ in prefill_rows[1:2])
    for a, b_ in zip(once, per_beam):
        assert [h["tokens"].tolist() for h in a] == [h["tokens"].tolist() for h in b_]
        torch.testing.assert_close(torch.stack([h["score"] for h in a]), torch.stack([h["score"] for h in b_]))


def test_prompt_rows_are_their_segments_one_after_the_other_left_padded():
    from wavllm_fairseq.models.wavllm.encoder import left_padded_concatenation

    torch.manual_seed(0)
    lengths = [torch.tensor([2, 0, 3]), torch.tensor([4, 0, 1]), torch.tensor([1, 2, 0])]
    segments = [(torch.randn(3, int(n.max()) + 1, 5), n) for n in lengths]  # one unused column each
    rows, pad, row_lengths = left_padded_concatenation(segments)
    assert row_lengths.tolist() == [7, 2, 4] and rows.shape == (3, 7, 5)
    for i in range(3):
        content = torch.cat([values[i, : n[i]] for values, n in segments])
        width = 7 - len(content)
        assert pad[i].tolist() == [True] * width + [False] * len(content)
        torch.testing.assert_close(rows[i, width:], content)
        assert not rows[i, :width].any()


def test_reordering_by_the_identity_copies_nothing_and_other_orders_pick_rows(task):
    model = build(task)
    b = batch(task, mixed(task))
    state = {}
    with torch.no_grad():
        encoder_out = encode(model, b)
        model.decoder(b["net_input"]["prev_output_tokens"][:, :1], encoder_out=encoder_out, incremental_state=state)
    past = model.decoder.get_incremental_state(state, "kv")["past"]
    same = torch.arange(3)
    assert model.encoder.reorder_encoder_out(encoder_out, same) is encoder_out
    model.decoder.reorder_incremental_state(state, same)
    assert model.decoder.get_incremental_state(state, "kv")["past"][0][0] is past[0][0]
    swapped = torch.tensor([2, 0, 1])
    picked = model.encoder.reorder_encoder_out(encoder_out, swapped)
    torch.testing.assert_close(picked["prompt_embeds"][0], encoder_out["prompt_embeds"][0][swapped])
    model.decoder.reorder_incremental_state(state, swapped)
    torch.testing.assert_close(model.decoder.get_incremental_state(state, "kv")["past"][1][1], past[1][1][swapped])


def test_only_adapters_fusion_lora_and_prompt_adapter_train(task):
    model = build(task, prompt_adapter=True)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"wavlm_layer_weights", "whisper_branch", "wavlm_branch", "fusion", "prompt_adapter", "llm"}
    llm_trainable = [n for n, p in model.decoder.llm.named_parameters() if p.requires_grad]
    assert llm_trainable and all("lora" in n.lower() for n in llm_trainable)
    model.train()
    assert not model.encoder.whisper.training and not model.encoder.wavlm.training


def test_stage_two_starts_from_a_stage_one_state(task):
    stage1 = build(task)
    stage2 = build(task, prompt_adapter=True)
    stage2.load_state_dict(copy.deepcopy(stage1.state_dict()))
    for (name, p1), (_, p2) in zip(stage1.decoder.named_parameters(), stage2.decoder.named_parameters()):
        torch.testing.assert_close(p1, p2)
    with pytest.raises(RuntimeError, match="unexpected"):
        stage1.load_state_dict({**stage1.state_dict(), "encoder.bogus": torch.zeros(1)})


def test_init_from_starts_the_model_from_a_checkpoint_file(task, tmp_path):
    from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError

    stage1 = build(task)
    with torch.no_grad():
        stage1.encoder.fusion.proj.weight.add_(1.0)  # differs from what build() initialises
    torch.save({"model": stage1.state_dict()}, tmp_path / "stage1.pt")

    def stage2_from(path):
        return WavLLMModel.build_model(
            WavLLMConfig(**{**ARCHITECTURES["wavllm_tiny"], "prompt_adapter": True, "init_from": path}), task)

    stage2 = stage2_from(str(tmp_path / "stage1.pt"))
    for name, value in stage1.state_dict().items():
        torch.testing.assert_close(stage2.state_dict()[name], value, msg=name)
    with pytest.raises(CheckpointError, match="missing.pt"):
        stage2_from(str(tmp_path / "missing.pt"))
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a fairseq checkpoint"):
        stage2_from(str(tmp_path / "other.pt"))
    torch.save({"model": {**stage1.state_dict(), "encoder.bogus": torch.zeros(1)}}, tmp_path / "bogus.pt")
    with pytest.raises(CheckpointError, match="bogus.pt: checkpoint does not fit the model.*encoder.bogus"):
        stage2_from(str(tmp_path / "bogus.pt"))


def test_activation_checkpointing_gives_the_same_gradients(task):
    grads = []
    for checkpointing in (False, True):
        model = build(task, prompt_adapter=True, train_wavlm=True, activation_checkpointing=checkpointing).train()
        b = batch(task, mixed(task))
        loss, _, _ = WavLLMCrossEntropy(task)(model, b)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("lora" in n for n in grads[0]) and any(n.startswith("encoder.wavlm.encoder.layers") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def generation_cfg(beam):
    from omegaconf import OmegaConf

    return OmegaConf.create({"generation": {"beam": beam, "print_alignment": False, "no_beamable_mm": False}})


@pytest.mark.parametrize("prompt_adapter", [False, True])
def test_generation_merges_lora_when_its_scale_is_fixed_and_decodes_the_same(task, prompt_adapter):
    model = build(task, prompt_adapter=prompt_adapter)
    b = batch(task, mixed(task))
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6)
    with torch.no_grad():
        before = gen.generate([model], b)
        model.prepare_for_inference_(generation_cfg(2))
        after = gen.generate([model], b)
    merged = [layer.merged for layer in model.decoder.llm.lora_layers()]
    # A per-prompt LoRA weight cannot be folded into shared weights: stage-2 models stay unmerged.
    assert merged and all(m != prompt_adapter for m in merged)
    for x, y in zip(before, after):
        assert x[0]["tokens"].tolist() == y[0]["tokens"].tolist()
        assert abs(float(x[0]["score"]) - float(y[0]["score"])) < 1e-4


def test_generation_with_bf16_decodes_in_bfloat16(task):
    """fairseq-generate --bf16 leaves the model in float32 (it casts only for --fp16)."""
    model = build(task, prompt_adapter=True)
    cfg = generation_cfg(1)
    cfg.common = {"bf16": True}
    model.prepare_for_inference_(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_b=4)
    with torch.no_grad():
        hypos = gen.generate([model], batch(task, mixed(task)))
    assert all(len(h[0]["tokens"]) > 0 for h in hypos)


def test_checkpoint_leaves_out_the_frozen_pretrained_llm_and_reloads_from_its_path(task, tmp_path):
    from wavllm_fairseq.models.llama.checkpoint import save_llama_meta

    llm_dir = tmp_path / "llm"
    save_llama_meta(build(task).decoder.llm, str(llm_dir))
    model = build(task, llm_path=str(llm_dir), prompt_adapter=True)
    state = model.state_dict()
    base = [k for k in state if k.startswith("decoder.llm.") and "lora" not in k.lower()]
    lora = [k for k in state if "lora" in k.lower()]
    assert not base and lora and any(k.startswith("encoder.prompt_adapter.") for k in state)
    saved_llm = sum(v.numel() for k, v in state.items() if k.startswith("decoder.llm."))
    lora_params = sum(p.numel() for n, p in model.decoder.llm.named_parameters() if "lora" in n.lower())
    assert saved_llm == lora_params < sum(p.numel() for p in model.decoder.llm.parameters()) / 10
    again = build(task, llm_path=str(llm_dir), prompt_adapter=True)
    again.load_state_dict(state)
    b = batch(task, mixed(task))
    with torch.no_grad():
        torch.testing.assert_close(again(**b["net_input"])[0], model(**b["net_input"])[0])


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def on_gpu(sample, dtype):
    """The sample on the GPU, its float tensors in ``dtype``, as fairseq's trainer hands it over."""
    from fairseq import utils

    sample = utils.move_to_cuda(sample)
    return utils.apply_to_sample(lambda t: t.to(dtype) if t.is_floating_point() else t, sample)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_a_gpu_the_model_computes_what_it_computes_on_the_cpu(task, dtype):
    model = build(task, prompt_adapter=True)
    b = batch(task, mixed(task))
    with torch.no_grad():
        ref, _ = model(**b["net_input"])
        gpu_model = copy.deepcopy(model).to("cuda", dtype)
        out, _ = gpu_model(**on_gpu(b, dtype)["net_input"])
    mask = b["target"].ne(task.target_dictionary.pad())
    ref, out = ref[mask][:, :-1], out.float().cpu()[mask][:, :-1]
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)
    else:  # bfloat16 keeps 8 bits of mantissa: compare the distributions, not the digits
        assert (out - ref).abs().max() < 0.05 * ref.abs().max()
        assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@requires_cuda
def test_on_a_gpu_beam_search_and_the_kv_cache_give_the_cpu_tokens(task):
    model = build(task, prompt_adapter=True)
    b = batch(task, mixed(task))
    gpu_model = copy.deepcopy(model).to("cuda")
    with torch.no_grad():
        cpu = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=6).generate([model], b)
        gpu = SequenceGenerator([gpu_model], task.target_dictionary, beam_size=4, max_len_b=6).generate(
            [gpu_model], on_gpu(b, torch.float32))
    for x, y in zip(cpu, gpu):
        assert x[0]["tokens"].tolist() == y[0]["tokens"].tolist()
        assert abs(float(x[0]["score"]) - float(y[0]["score"])) < 1e-3


def speech_path_gradient_order(model, task, sample):
    """The speech path's trainable parameters in the order their gradients are accumulated."""
    order, handles = [], []
    for name, p in model.encoder.named_parameters():
        if p.requires_grad and not name.startswith("prompt_adapter"):
            handles.append(p.register_post_accumulate_grad_hook(lambda p, name=name: order.append(name)))
    model.train()
    loss, _, _ = WavLLMCrossEntropy(task)(model, sample)
    loss.backward()
    for h in handles:
        h.remove()
    return order


@pytest.mark.parametrize("train_wavlm", [False, True])
def test_sharded_a_batch_without_speech_gives_zero_speech_gradients_in_the_order_speech_gives_them(task, train_wavlm):
    """FSDP pairs the ranks' gradients by the order they arrive: a rank whose batch is all text must
    produce the speech path's gradients too, in the same order."""
    fairscale_wrap = pytest.importorskip("fairscale.nn")
    ds = task.dataset("train")
    speech = [i for i, e in enumerate(ds.examples) if e.row.with_speech][:2]
    text = [i for i, e in enumerate(ds.examples) if not e.row.with_speech][:2]
    with fairscale_wrap.enable_wrap(wrapper_cls=RecordingWrapper, flatten_parameters=False, use_sharded_state=True):
        model = build(task, train_wavlm=train_wavlm)
    with_speech = speech_path_gradient_order(model, task, batch(task, speech))
    model.zero_grad()
    text_only = speech_path_gradient_order(model, task, batch(task, text))
    assert text_only == with_speech and len(with_speech) > 10
    assert any(n.startswith("wavlm.") for n in with_speech) == train_wavlm
    for name, p in model.encoder.named_parameters():
        if name in with_speech:
            assert p.grad is not None and not p.grad.any(), name
    # Unsharded (legacy_ddp zero-fills missing gradients), text batches skip the speech path.
    unsharded = build(task, train_wavlm=train_wavlm)
    assert speech_path_gradient_order(unsharded, task, batch(task, text)) == []


class RecordingWrapper(torch.nn.Module):
    """Stands in for fairseq's FSDP class in fairscale's wrapping context: records what is wrapped."""

    def __init__(self, module, **settings):
        super().__init__()
        self.module, self.settings = module, settings

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_fully_sharded_training_makes_each_llm_block_one_unit(task):
    fairscale_wrap = pytest.importorskip("fairscale.nn")
    with fairscale_wrap.enable_wrap(wrapper_cls=RecordingWrapper, flatten_parameters=False, use_sharded_state=True):
        model = build(task, prompt_adapter=True)
    units = [name for name, m in model.named_modules() if isinstance(m, RecordingWrapper)]
    assert units == [f"decoder.llm.layers.{i}" for i in range(len(model.decoder.llm.layers))]
    assert model.encoder.llm is model.decoder.llm  # the encoder's prompt adapter runs the same wrapped blocks
    b = batch(task, mixed(task))
    with torch.no_grad():
        logits, _ = model(**b["net_input"])
    assert torch.isfinite(logits[..., :-1]).all()


@pytest.mark.parametrize("settings", [dict(flatten_parameters=True, use_sharded_state=True),
                                      dict(flatten_parameters=False, use_sharded_state=False)])
def test_fully_sharded_training_names_the_flags_it_needs(task, settings):
    fairscale_wrap = pytest.importorskip("fairscale.nn")
    with fairscale_wrap.enable_wrap(wrapper_cls=RecordingWrapper, **settings):
        with pytest.raises(ValueError, match="--not-fsdp-flatten-parameters --use-sharded-state"):
            build(task)
