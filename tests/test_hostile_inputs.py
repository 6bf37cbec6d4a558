"""Bad checkpoints, options and audio through the command-line tools: one line naming the file,
row or option (no traceback), nothing run from a checkpoint, nothing valid rejected."""
import os
import re

import numpy as np
import pytest
import soundfile
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tests.helpers import generate_args, small_corpus, train_args

UNSAFE_LOAD = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
"""What makes torch.load unpickle anything when a caller leaves weights_only unset."""


def one_line_error(proc, *fragments):
    """The run failed with the plugin's one-line error holding every fragment, and no traceback."""
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("wavllm_fairseq: error: ")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def run_with_env(run_fairseq, tool, args, cwd, env):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_fairseq(tool, args, cwd=cwd, check=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def tiny(speech_corpus, tmp_path_factory, run_fairseq):
    """(data folder, checkpoint) of 2 updates on a 4-row corpus."""
    root = tmp_path_factory.mktemp("hostile")
    data = small_corpus(speech_corpus, root / "data")
    for name in ("test.tsv", "spm.model"):
        (data / name).write_bytes((speech_corpus / name).read_bytes())
    (data / "audio").symlink_to(speech_corpus / "audio")
    save = root / "ckpt"
    run_fairseq("train", train_args(data, save, 2), cwd=root)
    return data, save / "checkpoint_last.pt"


class Payload:
    """Pickles into a call that makes a folder: proof that a checkpoint ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def damaged_checkpoints(good, folder):
    """name -> (file, fragment its error must hold) for each kind of unusable checkpoint."""
    data = good.read_bytes()
    files = {}
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    files["truncated"] = (folder / "truncated.pt", "truncated or damaged")
    (folder / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    files["random"] = (folder / "random.pt", "not a PyTorch file")
    (folder / "empty.pt").write_bytes(b"")
    files["empty"] = (folder / "empty.pt", "truncated or damaged")
    state = torch.load(good, weights_only=True)
    lora = next(k for k in state["model"] if k.endswith("lora_A"))
    state["model"][lora] = state["model"][lora][:4]  # as saved with --lora-rank 4
    torch.save(state, folder / "other_rank.pt")
    files["other_rank"] = (folder / "other_rank.pt", f"does not fit this model: size mismatch for {lora}")
    state["model"] = Payload(folder / "PAYLOAD_RAN")
    torch.save(state, folder / "malicious.pt")
    files["malicious"] = (folder / "malicious.pt", "refused: it holds a posix.mkdir object")
    state = torch.load(good, weights_only=True)
    state["model"]["decoder.llm.tok_embeddings.weight"] = state["model"]["decoder.llm.tok_embeddings.weight"][:-7]
    torch.save(state, folder / "other_vocabulary.pt")
    files["other_vocabulary"] = (folder / "other_vocabulary.pt", "tok_embeddings.weight")
    return files


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "other_rank", "malicious", "other_vocabulary"])
def test_every_unusable_checkpoint_at_path_names_the_file_and_the_problem(tiny, tmp_path, kind, monkeypatch):
    import wavllm_fairseq  # noqa: F401  (installs the loading path)
    from fairseq import checkpoint_utils

    from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError

    monkeypatch.setenv(*next(iter(UNSAFE_LOAD.items())))
    path, fragment = damaged_checkpoints(tiny[1], tmp_path)[kind]
    with pytest.raises(CheckpointError) as e:
        checkpoint_utils.load_model_ensemble([str(path)])
    assert str(e.value).startswith(f"{path}: ") and fragment in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_a_malicious_checkpoint_last_is_refused_whatever_the_environment_says(tiny, tmp_path, run_fairseq):
    data, good = tiny
    save = tmp_path / "ckpt"
    save.mkdir()
    path, fragment = damaged_checkpoints(good, tmp_path)["malicious"]
    os.replace(path, save / "checkpoint_last.pt")
    proc = run_with_env(run_fairseq, "train", train_args(data, save, 4), tmp_path, UNSAFE_LOAD)
    one_line_error(proc, f"{save / 'checkpoint_last.pt'}: {fragment}")
    assert not (tmp_path / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize("flag, kind", [("--restore-file", "other_rank"), ("--finetune-from-model", "truncated")])
def test_a_bad_checkpoint_to_start_training_from_is_one_line_naming_it(tiny, tmp_path, run_fairseq, flag, kind):
    data, good = tiny
    path, fragment = damaged_checkpoints(good, tmp_path)[kind]
    proc = run_fairseq("train", train_args(data, tmp_path / "ckpt", 4) + [flag, path], cwd=tmp_path, check=False)
    one_line_error(proc, f"{path}: ", fragment)


def test_asking_for_more_hypotheses_than_the_beam_keeps_is_one_line(tiny, tmp_path, run_fairseq):
    data, good = tiny
    proc = run_fairseq("generate", generate_args(data, good, tmp_path, "--cpu", "--nbest", "3", "--beam", "2"),
                       cwd=tmp_path, check=False)
    one_line_error(proc, "--nbest 3", "--beam 2")


def test_diverse_beam_search_decodes_every_row_and_an_over_long_row_is_skipped_by_name(tiny, tmp_path,
                                                                                      run_fairseq):
    data, good = tiny
    test = data / "test.tsv"
    frames = [int(line.split("\t")[2]) for line in test.read_text().splitlines()[1:]]
    limit = sorted(frames)[-1] - 1  # the longest row (by its audio alone) is over the limit
    longest = frames.index(max(frames))
    proc = run_fairseq("generate", generate_args(data, good, tmp_path, "--cpu", "--beam", "4", "--nbest", "2",
                                                 "--diverse-beam-groups", "2", "--max-sample-size", limit),
                       cwd=tmp_path)
    assert f"line {longest + 2}, id 'test-{longest}': {max(frames)} audio samples, over --max-sample-size" \
        in proc.stdout + proc.stderr
    out = (tmp_path / "generate-test.txt").read_text()
    hypotheses = re.findall(r"^H-(\d+)\t", out, flags=re.M)
    assert sorted(set(hypotheses)) == ["0", "1"] and len(hypotheses) == 4


def test_a_clip_with_nan_samples_read_by_a_dataloader_worker_is_one_line_naming_its_row(tiny, tmp_path,
                                                                                       run_fairseq, speech_corpus):
    data, _ = tiny
    bad = tmp_path / "data"
    bad.mkdir()
    wave = np.sin(np.arange(16000) / 10).astype(np.float32)
    wave[500] = np.nan
    soundfile.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    lines = (data / "train.tsv").read_text().splitlines()
    fields = lines[1].split("\t")
    fields[1] = str(tmp_path / "nan.wav")
    lines[1] = "\t".join(fields)
    (bad / "train.tsv").write_text("\n".join(lines) + "\n")
    (bad / "audio").symlink_to(speech_corpus / "audio")
    (bad / "spm.model").symlink_to(speech_corpus / "spm.model")
    args = train_args(bad, tmp_path / "ckpt", 2)
    args[args.index("--num-workers") + 1] = "1"  # fairseq's default: rows are read in a worker process
    proc = run_fairseq("train", args, cwd=tmp_path, check=False)
    one_line_error(proc, f"{bad / 'train.tsv'}, line 2, id '{fields[0]}'", "NaN")


def test_a_damaged_checkpoint_last_is_passed_over_for_the_newest_intact_checkpoint_by_name(tiny, tmp_path, caplog):
    from wavllm_fairseq.fairseq_checkpoints import intact_resume_file
    from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError

    data = tiny[1].read_bytes()
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(data[: len(data) // 3])  # an interrupted copy, as fairseq made them
    with pytest.raises(CheckpointError, match=r"checkpoint_last.pt: cut short .* no intact checkpoint beside it"):
        intact_resume_file(str(last))
    older, newer, newest = (tmp_path / n for n in ("checkpoint_1_2.pt", "checkpoint_1_4.pt", "checkpoint_1_6.pt"))
    older.write_bytes(data)
    newer.write_bytes(data)
    newest.write_bytes(b"")  # killed while written
    for age, path in enumerate((newest, newer, older)):
        os.utime(path, (1e9 - age, 1e9 - age))
    with caplog.at_level("WARNING"):
        assert intact_resume_file(str(last)) == str(newer)
    assert f"resuming from {newer}" in caplog.text
    assert f"{last} (cut short" in caplog.text and f"{newest} (empty file)" in caplog.text
    assert intact_resume_file(str(newer)) == str(newer)  # an intact file is itself


@pytest.mark.parametrize("options, fragment", [
    (dict(nbest=3, beam=2), "--nbest 3 asks for more hypotheses than --beam 2 keeps"),
    (dict(max_len_b=0), "--max-len-b 0 leaves no room for an answer"),
    (dict(diverse_beam_groups=2, beam=5), "--diverse-beam-groups 2 must divide --beam 5"),
])
def test_decoding_options_that_cannot_work_are_named(options, fragment):
    from fairseq.dataclass.configs import GenerationConfig

    from wavllm_fairseq.errors import OptionError
    from wavllm_fairseq.tasks.wavllm import check_generation_options

    with pytest.raises(OptionError, match=re.escape(fragment)):
        check_generation_options(GenerationConfig(**options))
    check_generation_options(GenerationConfig(beam=4, nbest=2, diverse_beam_groups=2, max_len_b=1))


HYDRA_CONFIG = """
common: {{user_dir: {repo}/wavllm_fairseq, cpu: true}}
dataset: {{max_tokens: 1000000, num_workers: 0}}
task: {{_name: wavllm, data: {data}, tokenizer_path: {tokenizer}}}
model: {{_name: wavllm, whisper_preset: tiny_test, wavlm_preset: tiny_test, llm_preset: tiny_test,
        whisper_pad_to_30s: false}}
criterion: {{_name: wavllm_cross_entropy}}
optimizer: {{_name: adam}}
lr_scheduler: {{_name: fixed}}
optimization: {{max_update: 1, lr: [0.001]}}
checkpoint: {{save_dir: {save}}}
"""


def test_a_bad_row_under_fairseq_hydra_train_is_one_line_too(speech_corpus, tmp_path, run_fairseq):
    data = tmp_path / "data"
    data.mkdir()
    row = "u1\tmissing.wav\t16000\tSay it.\thi\tTrue\n"
    for split in ("train", "valid"):
        (data / f"{split}.tsv").write_text("id\taudio\tn_frames\tprompt\ttgt_text\twith_speech\n" + row)
    (tmp_path / "bad.yaml").write_text(HYDRA_CONFIG.format(repo=REPO, data=data, tokenizer=speech_corpus / "spm.model",
                                                           save=tmp_path / "ckpt"))
    proc = run_fairseq("hydra_train", ["--config-dir", tmp_path, "--config-name", "bad",
                                       f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{data / 'valid.tsv'}, line 2, id 'u1': {data / 'missing.wav'}: audio file not found" in proc.stderr
