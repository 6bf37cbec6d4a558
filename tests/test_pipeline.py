"""fairseq-train -> resume -> fairseq-generate on real (synthesized) speech, through the CLI."""
import re
import shutil

import pytest
import torch

from tests.helpers import generate_args, train_args, train_losses


@pytest.fixture(scope="module")
def trained(speech_corpus, tmp_path_factory, run_fairseq):
    save = tmp_path_factory.mktemp("ckpt")
    first = run_fairseq("train", train_args(speech_corpus, save, 20), cwd=save)
    resumed = run_fairseq("train", train_args(speech_corpus, save, 40), cwd=save)
    return save, first, resumed


def test_training_resumes_and_loss_goes_down(trained):
    save, first, resumed = trained
    log = first.stdout + first.stderr
    later = resumed.stdout + resumed.stderr
    assert "Loaded checkpoint" in later and "@ 20 updates" in later
    losses = {**train_losses(log), **train_losses(later)}
    assert min(losses) == 1 and max(losses) == 40, sorted(losses)
    assert 21 in losses and 20 in losses
    early = sum(losses[u] for u in range(1, 6)) / 5
    late = sum(losses[u] for u in range(36, 41)) / 5
    # The tiny LLM is random and frozen (only adapters and LoRA train), so the drop is modest.
    assert late < early - 0.1, (early, late)
    # The checkpoint loads with torch's default weights_only=True once the plugin is imported.
    import wavllm_fairseq  # noqa: F401
    state = torch.load(save / "checkpoint_last.pt")
    assert state["cfg"]["model"]["_name"].startswith("wavllm")


@pytest.mark.parametrize("decoding", [["--beam", "4"], ["--sampling", "--temperature", "0.7", "--beam", "1"]])
def test_generate_prints_every_test_row_and_a_score(trained, speech_corpus, decoding, run_fairseq):
    save, _, _ = trained
    run_fairseq("generate", generate_args(speech_corpus, save / "checkpoint_last.pt", save / f"gen{len(decoding)}",
                                          "--cpu", *decoding), cwd=save)
    out = (save / f"gen{len(decoding)}" / "generate-test.txt").read_text()
    ids = sorted(re.findall(r"^H-(\d+)\t", out, flags=re.M))
    assert ids == ["0", "1", "2"]
    assert len(re.findall(r"^T-\d+\t", out, flags=re.M)) == 3
    assert re.search(r"Generate test with beam=\d+: WER: \d+\.\d+", out)


def test_bad_manifest_row_is_reported_with_file_line_and_id(speech_corpus, tmp_path, run_fairseq):
    data = tmp_path / "data"
    shutil.copytree(speech_corpus, data)
    lines = (data / "train.tsv").read_text().splitlines()
    fields = lines[3].split("\t")
    fields[1] = "audio/missing.wav"
    lines[3] = "\t".join(fields)
    (data / "train.tsv").write_text("\n".join(lines) + "\n")
    proc = run_fairseq("train", train_args(data, tmp_path / "ckpt", 1), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert f"{data}/train.tsv, line 4, id '{fields[0]}'" in proc.stderr
    assert "missing.wav: audio file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
