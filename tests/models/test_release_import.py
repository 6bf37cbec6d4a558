"""The released WavLLM checkpoint's import, checked against the release's forward pass.

A tiny checkpoint in the release's exact layout (its key names, LoRA stored as x @ A @ B, Whisper and
WavLM under Hugging Face's module names, a fairseq pickle with omegaconf and meter objects) is
imported; our model's outputs are compared with :func:`release_forward`, written here from the
release's equations on transformers' Whisper and WavLM (the modules the release runs), not with
our modules.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

transformers = pytest.importorskip("transformers")

from wavllm_fairseq.data.manifest import read_manifest  # noqa: E402
from wavllm_fairseq.import_release import import_release  # noqa: E402
from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError  # noqa: E402

SYSTEM = ("As a helpful language and speech assistant, you are able to understand the speech content provided by "
          "the user, and assist the user with a variety of tasks using natural language.")
DIM, LAYERS, HEAD_DIM, FFN, RANK = 64, 2, 16, 96, 4
WINDOW = 480000
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- the release's checkpoint, tiny


def hf_whisper():
    cfg = transformers.WhisperConfig(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=1,
                                     encoder_ffn_dim=256, max_source_positions=1500)
    torch.manual_seed(1)
    return transformers.models.whisper.modeling_whisper.WhisperEncoder(cfg).eval()


def hf_wavlm():
    cfg = transformers.WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_buckets=32, max_bucket_distance=800,
        feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)
    torch.manual_seed(2)
    return transformers.WavLMModel(cfg).eval()


def _release_wavlm_names(state):
    """transformers' current weight-norm names -> the release's (transformers 4.32: weight_g / weight_v)."""
    out = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                               "weight_v")
        out[k] = v
    return out


def release_weights(vocab: int, whisper, wavlm, prompt_adapter=True):
    g = torch.Generator().manual_seed(3)

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    w = {f"audio_encoder.model.{k}": v.clone() for k, v in whisper.state_dict().items()}
    w.update({f"wavlm_encoder.model.{k}": v.clone() for k, v in _release_wavlm_names(wavlm.state_dict()).items()})
    speech, bottleneck, projection = DIM // 4, DIM // 8, DIM // 2
    for stream, width, mid in (("audio", 64, 64), ("wavlm", 32, speech // 2)):
        p = f"{stream}_encoder."
        w[p + "subsample.conv_layers.0.weight"], w[p + "subsample.conv_layers.0.bias"] = rnd(mid, width, 3), rnd(mid)
        w[p + "subsample.conv_layers.1.weight"] = rnd(2 * speech, mid // 2, 3)
        w[p + "subsample.conv_layers.1.bias"] = rnd(2 * speech)
        w[p + "adapter.down_layer.weight"], w[p + "adapter.down_layer.bias"] = rnd(bottleneck, speech), rnd(bottleneck)
        w[p + "adapter.up_layer.weight"], w[p + "adapter.up_layer.bias"] = rnd(speech, bottleneck), rnd(speech)
        w[p + "adapter.layer_norm.weight"], w[p + "adapter.layer_norm.bias"] = 1 + rnd(speech), rnd(speech)
        w[p + "projector.weight"], w[p + "projector.bias"] = rnd(projection, speech), rnd(projection)
    w["wavlm_encoder.output_weights"] = rnd(3, scale=1.0)
    w["wavlm_audio_proj.weight"], w["wavlm_audio_proj.bias"] = rnd(DIM, 2 * projection), rnd(DIM)
    w["audio_proj.weight"], w["audio_proj.bias"] = rnd(DIM, projection), rnd(DIM)  # unused by the release
    m = "gpt_model.model_llama."
    w[m + "tok_embeddings.weight"], w[m + "output.weight"] = rnd(vocab, DIM, scale=0.03), rnd(vocab, DIM, scale=0.3)
    w[m + "norm.weight"] = 1 + rnd(DIM)
    for i in range(LAYERS):
        layer = f"{m}layers.{i}."
        for proj in "qkvo":
            w[f"{layer}attention.w{proj}.weight"] = rnd(DIM, DIM, scale=0.15)
            w[f"{layer}attention.w{proj}_lora_A"] = rnd(DIM, RANK, scale=0.2)  # in x r
            w[f"{layer}attention.w{proj}_lora_B"] = rnd(RANK, DIM, scale=0.2)  # r x out
        w[layer + "feed_forward.w1.weight"], w[layer + "feed_forward.w3.weight"] = rnd(FFN, DIM), rnd(FFN, DIM)
        w[layer + "feed_forward.w2.weight"] = rnd(DIM, FFN)
        w[layer + "attention_norm.weight"], w[layer + "ffn_norm.weight"] = 1 + rnd(DIM), 1 + rnd(DIM)
    if prompt_adapter:
        w[m + "scale_fc_1.weight"], w[m + "scale_fc_1.bias"] = rnd(DIM // 4, DIM, scale=0.3), rnd(DIM // 4)
        w[m + "scale_fc_2.weight"], w[m + "scale_fc_2.bias"] = rnd(DIM, DIM // 4, scale=0.3), 0.5 + rnd(DIM)
        w[m + "scale_weight_attention.weight"], w[m + "scale_weight_attention.bias"] = rnd(1, DIM), rnd(1)
    return w


def save_release(path, weights):
    """As fairseq's trainer pickles it: omegaconf config, argparse namespace and meters beside the weights."""
    from fairseq.logging.meters import AverageMeter

    meter = AverageMeter()
    meter.update(1.5)
    torch.save({"cfg": OmegaConf.create({"model": {"_name": "speechllm_model"}}), "args": argparse.Namespace(a=1),
                "model": weights, "extra_state": {"metrics": {"train": meter}}, "optimizer_history": []}, path)


# ---------------------------------------------------------------- the release's forward pass, from its equations


def subsample(x, p, conv):
    """Two k=3, s=2, p=1 convolutions with GLU, no masking; lengths floor((L - 1) / 2 + 1) each."""
    x = x.transpose(1, 2)
    for i in range(2):
        x = F.glu(F.conv1d(x, conv[f"{p}subsample.conv_layers.{i}.weight"], conv[f"{p}subsample.conv_layers.{i}.bias"],
                           stride=2, padding=1), dim=1)
    return x.transpose(1, 2)


def stream_tail(x, p, w):
    """Adapter x + LayerNorm(up(GELU(down(x)))), then the projection."""
    h = F.linear(F.gelu(F.linear(x, w[p + "adapter.down_layer.weight"], w[p + "adapter.down_layer.bias"])),
                 w[p + "adapter.up_layer.weight"], w[p + "adapter.up_layer.bias"])
    x = x + F.layer_norm(h, h.shape[-1:], w[p + "adapter.layer_norm.weight"], w[p + "adapter.layer_norm.bias"])
    return F.linear(x, w[p + "projector.weight"], w[p + "projector.bias"])


def release_speech(wave, w, whisper, wavlm):
    """The release's speech features for one clip: (whisper stream, wavlm stream, fused)."""
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    parts = [wave[s:s + WINDOW] for s in range(0, len(wave), WINDOW)] if len(wave) > WINDOW else [wave]
    feats = [extractor(p, sampling_rate=16000, return_tensors="pt", return_attention_mask=True) for p in parts]
    mel = torch.cat([f.input_features for f in feats])
    mask = torch.cat([f.attention_mask for f in feats])
    with torch.no_grad():
        hidden = whisper(mel).last_hidden_state
        out_lengths = (mask.sum(-1) - 1) // 2 + 1
        hidden = hidden[:, : int(out_lengths.max())]  # cut at the longest window of the batch
        semantic = stream_tail(subsample(hidden, "audio_encoder.", w), "audio_encoder.", w)
        semantic = semantic.reshape(1, -1, semantic.shape[-1])  # windows joined in time, padding included
        states = wavlm(torch.from_numpy(wave)[None].float(), output_hidden_states=True).hidden_states
        weights = torch.softmax(w["wavlm_encoder.output_weights"], dim=0)
        acoustic = sum(s * a for s, a in zip(states, weights))
        acoustic = stream_tail(subsample(acoustic, "wavlm_encoder.", w), "wavlm_encoder.", w)
        t = min(semantic.shape[1], acoustic.shape[1])
        fused = F.linear(torch.cat([semantic[:, :t], acoustic[:, :t]], dim=2), w["wavlm_audio_proj.weight"],
                         w["wavlm_audio_proj.bias"])
    return semantic[:, :t], acoustic[:, :t], fused


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


def llama(h, w, lora_weight=None):
    """The release's LLaMA on input embeddings (1 x T x D): complex rotary (theta 1e4), causal attention,
    LoRA x @ A @ B scaled by the prompt-aware weight; None runs it without LoRA. Returns the last
    block's output before the final norm."""
    m = "gpt_model.model_llama."
    t = h.shape[1]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, HEAD_DIM, 2)[: HEAD_DIM // 2].float() / HEAD_DIM))
    freqs_cis = torch.polar(torch.ones(t, HEAD_DIM // 2), torch.outer(torch.arange(t).float(), freqs))
    mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)

    def rotate(x):
        x = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(x * freqs_cis[None, :, None, :]).flatten(3)

    def proj(x, name, layer):
        out = x @ w[f"{layer}attention.{name}.weight"].t()
        if lora_weight is not None:
            out = out + (x @ w[f"{layer}attention.{name}_lora_A"] @ w[f"{layer}attention.{name}_lora_B"]) * lora_weight
        return out

    heads = DIM // HEAD_DIM
    for i in range(LAYERS):
        layer = f"{m}layers.{i}."
        x = rms_norm(h, w[layer + "attention_norm.weight"])
        q, k, v = (proj(x, n, layer).view(1, t, heads, HEAD_DIM) for n in ("wq", "wk", "wv"))
        q, k = rotate(q), rotate(k)
        scores = q.transpose(1, 2) @ k.transpose(1, 2).transpose(2, 3) / math.sqrt(HEAD_DIM) + mask
        out = (torch.softmax(scores, dim=-1) @ v.transpose(1, 2)).transpose(1, 2).reshape(1, t, DIM)
        h = h + proj(out, "wo", layer)
        x = rms_norm(h, w[layer + "ffn_norm.weight"])
        ffn = F.silu(x @ w[layer + "feed_forward.w1.weight"].t()) * (x @ w[layer + "feed_forward.w3.weight"].t())
        h = h + ffn @ w[layer + "feed_forward.w2.weight"].t()
    return h


def prompt_weight(w, instruction_ids):
    m = "gpt_model.model_llama."
    hidden = llama(w[m + "tok_embeddings.weight"][instruction_ids][None], w)
    s = F.linear(F.gelu(F.linear(hidden, w[m + "scale_fc_1.weight"], w[m + "scale_fc_1.bias"])),
                 w[m + "scale_fc_2.weight"], w[m + "scale_fc_2.bias"])
    a = torch.softmax(F.linear(s, w[m + "scale_weight_attention.weight"], w[m + "scale_weight_attention.bias"]), dim=1)
    return torch.clamp(torch.relu((s * a).sum(dim=1)), max=3)


def release_prompt_ids(sp, prompt):
    """The release dataset's token ids: <s> + system turn + <SPEECH>, then ' </SPEECH> {prompt} [/INST]'."""
    left = [sp.bos_id()] + sp.encode("[INST]<<SYS>>\n" + SYSTEM + "\n<</SYS>>\n\n<SPEECH>")
    right = sp.encode(" </SPEECH> " + prompt + " [/INST]")
    return left, right, sp.encode('"' + prompt + '"')


def release_logits(w, sp, fused, prompt, continuation):
    """Logits after the prompt and after each token of ``continuation`` (teacher forcing)."""
    m = "gpt_model.model_llama."
    left, right, instruction = release_prompt_ids(sp, prompt)
    emb = w[m + "tok_embeddings.weight"]
    with torch.no_grad():
        h = torch.cat([emb[left][None], fused, emb[right + continuation][None]], dim=1)
        out = llama(h, w, prompt_weight(w, instruction)[:, None, :])
        logits = rms_norm(out, w[m + "norm.weight"]) @ w[m + "output.weight"].t()
    return logits[0, -(len(continuation) + 1):]


def release_greedy(w, sp, fused, prompt, steps):
    tokens = []
    for _ in range(steps):
        tokens.append(int(release_logits(w, sp, fused, prompt, tokens)[-1].argmax()))
        if tokens[-1] == sp.eos_id():
            break
    return tokens


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def release(speech_corpus, tmp_path_factory):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(speech_corpus / "spm.model"))
    whisper, wavlm = hf_whisper(), hf_wavlm()
    weights = release_weights(sp.get_piece_size(), whisper, wavlm)
    root = tmp_path_factory.mktemp("release")
    save_release(root / "final.pt", weights)
    out = root / "wavllm-release.pt"
    import_release(str(root / "final.pt"), str(out), str(speech_corpus / "spm.model"), llm_head_dim=HEAD_DIM)
    return argparse.Namespace(root=root, weights=weights, whisper=whisper, wavlm=wavlm, sp=sp, checkpoint=out)


def clip(speech_corpus, index, seconds=None):
    wave, rate = soundfile.read(speech_corpus / f"audio/train_{index}.wav", dtype="float32")
    if seconds is not None:  # repeat the sentence up to the given length
        wave = np.resize(wave, int(seconds * rate))
    return wave


@pytest.fixture(scope="module")
def ours(release):
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(release.checkpoint)])
    return models[0].eval(), task


def our_speech(model, wave):
    """Our encoder's per-stream features and fused frames for one clip."""
    enc = model.encoder
    waves, lengths = torch.from_numpy(wave)[None], torch.tensor([len(wave)])
    from wavllm_fairseq.models.wavllm.encoder import whisper_windows

    with torch.no_grad():
        semantic, semantic_lengths = enc.encode_whisper(waves, lengths, None)
        semantic, semantic_lengths = enc.whisper_branch(semantic, semantic_lengths, whisper_windows(lengths))
        states, acoustic_lengths, _ = enc.wavlm(waves, lengths)
        acoustic, acoustic_lengths = enc.wavlm_branch(enc.wavlm_layer_weights(states), acoustic_lengths)
        fused, fused_lengths = enc.encode_speech(waves, lengths)
    t = int(fused_lengths[0])
    return semantic[:, :t], acoustic[:, :t], fused[:, :t]


# ---------------------------------------------------------------- tests

# A clip whose last hop is partial (ceil and floor frame counts differ), and one over 30 s.
CLIPS = [(0, 1.5 + 77 / 16000), (3, 34.4)]


@pytest.mark.parametrize("index, seconds", CLIPS)
def test_imported_model_computes_what_the_release_computes(release, ours, speech_corpus, index, seconds):
    model, task = ours
    wave = clip(speech_corpus, index, seconds)
    expected = release_speech(wave, release.weights, release.whisper, release.wavlm)
    for name, got, want in zip(("Whisper stream", "WavLM stream", "fused"), our_speech(model, wave), expected):
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=name)

    prompt = "Transcribe the audio clip into text."
    left, right, instruction = release_prompt_ids(release.sp, prompt)
    ids = torch.tensor([instruction])
    with torch.no_grad():
        weight = model.encoder.prompt_lora_weight(ids, torch.tensor([len(instruction)]))
    torch.testing.assert_close(weight, prompt_weight(release.weights, instruction), atol=1e-5, rtol=1e-5)

    # Logits of the first target positions, through our data path (manifest, template, tokenizer).
    target = "the red cat"
    continuation = release.sp.encode(target)
    want = release_logits(release.weights, release.sp, expected[2], prompt, continuation)
    path = speech_corpus / f"release_{index}.wav"
    soundfile.write(path, wave, 16000)
    from wavllm_fairseq.data.manifest import ManifestRow, write_manifest

    write_manifest(str(speech_corpus / f"release_{index}.tsv"),
                   [ManifestRow("r", [path.name], len(wave), prompt, target, True)])
    task.cfg.data = str(speech_corpus)
    task.load_dataset(f"release_{index}")
    ds = task.dataset(f"release_{index}")
    sample = ds.collater([ds[0]])
    with torch.no_grad():
        logits, _ = model(**sample["net_input"])
    got = logits[0, : len(continuation) + 1, : want.shape[-1]]
    assert (got - want).abs().max() <= 1e-4

    steps = 6
    greedy = release_greedy(release.weights, release.sp, expected[2], prompt, steps)
    generator = task.build_generator([model], argparse.Namespace(beam=1, max_len_b=len(greedy), max_len_a=0,
                                                                 min_len=1))
    hypo = task.inference_step(generator, [model], sample)[0][0]["tokens"].tolist()
    assert hypo[: len(greedy)] == greedy


def manifest_of_mixed_clips(speech_corpus, name):
    from wavllm_fairseq.data.manifest import ManifestRow, write_manifest

    rows = []
    for i, (index, seconds) in enumerate([(1, None), (2, 31.0), (4, None), (5, None)]):
        wave = clip(speech_corpus, index, seconds)
        soundfile.write(speech_corpus / f"{name}_{i}.wav", wave, 16000)
        rows.append(ManifestRow(f"m{i}", [f"{name}_{i}.wav"], len(wave), "" if i == 3 else "Transcribe the audio.",
                                "x", True))
    write_manifest(str(speech_corpus / f"{name}.tsv"), rows)


def hypotheses(text):
    return dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", text, flags=re.M))


def test_imported_model_decodes_a_batch_with_beam_4_as_each_clip_alone(release, speech_corpus, run_fairseq,
                                                                        tmp_path):
    manifest_of_mixed_clips(speech_corpus, "mixed")
    results = {}
    for batch in (1, 4):
        args = [speech_corpus, "--user-dir", f"{REPO}/wavllm_fairseq", "--task", "wavllm",
                "--tokenizer-path", speech_corpus / "spm.model", "--path", release.checkpoint, "--gen-subset", "mixed",
                "--beam", "4", "--batch-size", batch, "--max-len-a", "0", "--max-len-b", "6", "--cpu",
                "--results-path", tmp_path / f"b{batch}"]
        run_fairseq("generate", args, cwd=tmp_path)
        results[batch] = hypotheses((tmp_path / f"b{batch}" / "generate-mixed.txt").read_text())
    assert sorted(results[4]) == ["0", "1", "2", "3"]
    assert results[4] == results[1]
    # The Python API loads the imported checkpoint too and answers as fairseq-generate does.
    from wavllm_fairseq import WavLLM

    rows = read_manifest(str(speech_corpus / "mixed.tsv"))
    answers = WavLLM.from_checkpoint(str(release.checkpoint), device="cpu").generate(
        [str(speech_corpus / r.audio[0]) for r in rows], [r.prompt for r in rows], beam=4, max_new_tokens=6)
    assert answers == [results[4][str(i)] for i in range(len(rows))]


def test_fine_tuning_starts_from_every_imported_weight_and_saves_only_what_trains(
        release, ours, speech_corpus, run_fairseq, tmp_path):
    """The README's answer to "how do I fine-tune the released WavLLM on my data"."""
    from wavllm_fairseq.models.wavllm import WavLLMConfig, WavLLMModel

    imported, task = ours
    model = WavLLMModel.build_model(WavLLMConfig(base_checkpoint=str(release.checkpoint)), task)
    everything = imported.state_dict()
    assert set(nn_state(model)) == set(everything)
    for key, value in nn_state(model).items():
        assert torch.equal(value, everything[key]), key
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in everything if re.search(
        r"lora_[AB]$|_branch\.|fusion\.|prompt_adapter\.|wavlm_layer_weights\.", n)}

    # The README's recipe: examples/wavllm/config/release_finetune.yaml, made CPU-sized.
    save = tmp_path / "finetune"
    cmd = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", f"{REPO}/examples/wavllm/config",
           "--config-name", "release_finetune", f"common.user_dir={REPO}/wavllm_fairseq", f"task.data={speech_corpus}",
           f"task.tokenizer_path={speech_corpus / 'spm.model'}", f"model.base_checkpoint={release.checkpoint}",
           f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra", "common.bf16=false", "common.cpu=true",
           "dataset.num_workers=0", "dataset.max_tokens=1000000", "dataset.disable_validation=true",
           "optimization.max_update=2", "optimization.lr=[1e-3]", "lr_scheduler.warmup_updates=1",
           "model.activation_checkpointing=false"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    saved = torch.load(save / "checkpoint_last.pt")["model"]
    assert set(saved) == trainable
    assert any(not torch.equal(saved[k], everything[k]) for k in trainable)  # it trained
    run_fairseq("generate", [speech_corpus, "--user-dir", f"{REPO}/wavllm_fairseq", "--task", "wavllm",
                             "--tokenizer-path", speech_corpus / "spm.model", "--path", save / "checkpoint_last.pt",
                             "--gen-subset", "test", "--max-tokens", "400000", "--max-len-a", "0", "--max-len-b", "4",
                             "--cpu",
                             "--results-path", tmp_path / "gen"], cwd=tmp_path)
    assert len(hypotheses((tmp_path / "gen" / "generate-test.txt").read_text())) == 3


def nn_state(model):
    """Every weight, whether or not our state_dict() would save it."""
    return torch.nn.Module.state_dict(model)


@pytest.fixture()
def release_file(release, tmp_path):
    def write(change):
        weights = dict(release.weights)
        change(weights)
        save_release(tmp_path / "final.pt", weights)
        return tmp_path / "final.pt"
    return write


def _import(path, speech_corpus, tmp_path):
    import_release(str(path), str(tmp_path / "out.pt"), str(speech_corpus / "spm.model"), llm_head_dim=HEAD_DIM)


LORA_A = "gpt_model.model_llama.layers.1.attention.wv_lora_A"


@pytest.mark.parametrize("change, message", [
    (lambda w: w.update({"gpt_model.model_llama.bogus.weight": torch.zeros(2)}),
     r"no entry of the key map covers \(key 'gpt_model.model_llama.bogus.weight'"),
    (lambda w: w.pop("wavlm_audio_proj.weight"),
     r"lacks a weight our model needs: 'encoder.fusion.proj.weight' \(release name 'wavlm_audio_proj.weight'\)"),
    (lambda w: w.update({LORA_A: torch.zeros(DIM, RANK + 1)}),
     rf"wrong shape .*key '{LORA_A}': expected shape \({RANK}, {DIM}\), got \({RANK + 1}, {DIM}\)"),
])
def test_a_release_that_does_not_fit_is_named_key_by_key(release_file, speech_corpus, tmp_path, change, message):
    path = release_file(change)
    with pytest.raises(CheckpointError, match=message) as e:
        _import(path, speech_corpus, tmp_path)
    assert str(path) in str(e.value)
    assert not (tmp_path / "out.pt").exists()


def test_files_that_are_not_the_checkpoint_are_named_in_one_line(release, speech_corpus, tmp_path, capsys):
    from wavllm_fairseq.import_release import main

    html = tmp_path / "expired.pt"
    html.write_text("<!DOCTYPE html><html><head><title>Access denied</title></head></html>")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(release.checkpoint.read_bytes()[:100000])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path, reason in [(html, "an HTML page, not a checkpoint"), (truncated, "truncated or damaged"),
                         (empty, "empty file"), (tmp_path / "missing.pt", "cannot read: No such file")]:
        with pytest.raises(SystemExit) as exit_code:
            main([str(path), "--out", str(tmp_path / "o.pt"), "--tokenizer", str(speech_corpus / "spm.model")])
        assert exit_code.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(f"wavllm_fairseq.import_release: error: {path}: ") and err.count("\n") == 1
        assert reason in err


def test_import_writes_bfloat16_that_fairseq_loads(release, speech_corpus, tmp_path):
    from fairseq import checkpoint_utils

    out = tmp_path / "bf16.pt"
    import_release(str(release.root / "final.pt"), str(out), str(speech_corpus / "spm.model"), torch.bfloat16,
                   llm_head_dim=HEAD_DIM)
    weights = torch.load(out)["model"]
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert out.stat().st_size < 0.6 * release.checkpoint.stat().st_size
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)])
    for key, value in models[0].state_dict().items():
        torch.testing.assert_close(value, weights[key].float(), msg=key)
