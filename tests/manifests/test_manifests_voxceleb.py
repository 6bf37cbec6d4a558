import os
from collections import Counter

import pytest
import soundfile

from manifests import common, voxceleb
from wavllm_fairseq.data.manifest import read_manifest


@pytest.fixture
def vox(tmp_path, write_audio, garbage_file, to_16k):
    """VoxCeleb1 layout: 3 speakers x 2 videos x 2 utterances (one speaker at 8 kHz), one broken file."""
    root = tmp_path / "vox1_test_wav"
    frames = {}
    for s, speaker in enumerate(("id10270", "id10271", "id10272")):
        rate = 8000 if speaker == "id10272" else 16000
        for v, video in enumerate(("5r0dWxy17C8", "zjwijMp0Qyw")):
            for u in (1, 2):
                rel = f"wav/{speaker}/{video}/{u:05d}.wav"
                n = write_audio(root / rel, 800 + 160 * (4 * s + 2 * v + u), rate)
                frames[rel] = to_16k(n, rate)
    garbage_file(root / "wav" / "id10270" / "zjwijMp0Qyw" / "00003.wav")
    return root, frames


def _speaker(path):
    return path.split("/")[1]


def test_multi_audio_pairs_are_balanced_and_labelled_by_speaker(vox, tmp_path):
    root, frames = vox
    out = tmp_path / "sv.tsv"
    result = voxceleb.main(["--root", str(root), "--out", str(out), "--n-pairs", "20", "--quiet"])
    rows = read_manifest(str(out))
    assert len(rows) == 20 and Counter(r.tgt_text for r in rows) == {"Yes": 10, "No": 10}
    assert len({tuple(r.audio) for r in rows}) == 20
    for row in rows:
        first, second = row.audio
        assert first != second and first in frames and second in frames
        assert row.tgt_text == ("Yes" if _speaker(first) == _speaker(second) else "No")
        assert row.n_frames == frames[first] + frames[second]
        assert row.prompt in common.prompt_pools()["sv"] and row.task == "sv"
    assert len({r.prompt for r in rows}) > 1
    broken = str(root / "wav" / "id10270" / "zjwijMp0Qyw" / "00003.wav")
    assert [p for p, _ in result.report.entries] == [broken]
    assert os.path.isfile(tmp_path / "sv.skipped.tsv")


def test_pairs_are_seeded(vox, tmp_path):
    root, _ = vox
    texts = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        voxceleb.main(["--root", str(root), "--out", str(tmp_path / f"{name}.tsv"), "--n-pairs", "10", "--quiet",
                       "--seed", seed])
        texts.append((tmp_path / f"{name}.tsv").read_text())
    assert texts[0] == texts[1] != texts[2]


def test_concat_mode_writes_16k_clips_of_both_utterances(vox, tmp_path):
    root, frames = vox
    multi, concat = tmp_path / "multi.tsv", tmp_path / "concat.tsv"
    args = ["--root", str(root), "--n-pairs", "6", "--quiet", "--seed", "3"]
    voxceleb.main(args + ["--out", str(multi)])
    voxceleb.main(args + ["--out", str(concat), "--mode", "concat", "--concat-dir", str(tmp_path / "clips")])
    for pair, row in zip(read_manifest(str(multi)), read_manifest(str(concat))):
        assert (row.id, row.tgt_text, row.audio) == (pair.id, pair.tgt_text, [f"{row.id}.wav"])
        info = soundfile.info(str(tmp_path / "clips" / row.audio[0]))
        assert info.samplerate == 16000 and info.frames == row.n_frames == pair.n_frames


def test_too_few_speakers_or_pairs_is_an_error(vox, tmp_path):
    root, _ = vox
    with pytest.raises(SystemExit, match="distinct pairs"):
        voxceleb.main(["--root", str(root), "--out", str(tmp_path / "x.tsv"), "--n-pairs", "400", "--quiet"])
    with pytest.raises(SystemExit):  # argparse: concat needs a folder
        voxceleb.main(["--root", str(root), "--out", str(tmp_path / "x.tsv"), "--n-pairs", "2", "--mode", "concat"])
