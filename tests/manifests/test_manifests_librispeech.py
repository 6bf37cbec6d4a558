import os
import subprocess
import sys

import pytest

from manifests import common, librispeech
from wavllm_fairseq.data.manifest import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def libri(tmp_path, write_audio, garbage_file):
    """A LibriSpeech tree with good utterances and one of each kind of bad entry."""
    root = tmp_path / "LibriSpeech"
    expected = {}  # utt id -> (relative path, samples, rate, text)

    def chapter(split, speaker, chapter, utts):
        folder = root / split / speaker / chapter
        lines = []
        for utt, text, n, rate in utts:
            uid = f"{speaker}-{chapter}-{utt}"
            if n is not None:
                write_audio(folder / f"{uid}.flac", n, rate)
                expected[uid] = (f"{split}/{speaker}/{chapter}/{uid}.flac", n, rate, text)
            if text is not None:
                lines.append(f"{uid} {text}".rstrip())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
        return folder

    chapter("dev-clean", "84", "121123", [("0000", "GO DO YOU HEAR", 3200, 16000),
                                          ("0001", "BUT IN LESS THAN FIVE MINUTES", 2400, 8000)])
    bad = chapter("dev-clean", "174", "50561", [
        ("0000", "FOR A FEW MILES", 4410, 44100),
        ("0001", "", 1600, 16000),             # empty transcript
        ("0002", "NO SUCH FILE", None, None),  # transcript line without audio
        ("0003", None, 1600, 16000),           # audio without transcript line
        ("0004", "A BROKEN FILE", None, None),
    ])
    garbage_file(bad / "174-50561-0004.flac")
    chapter("test-clean", "1089", "134686", [("0000", "HE HOPED THERE WOULD BE STEW", 1600, 16000)])
    for uid in ("174-50561-0001", "174-50561-0003"):
        expected.pop(uid)
    return root, expected


def test_rows_paths_frames_and_prompts(libri, tmp_path, to_16k, capsys):
    root, expected = libri
    out = tmp_path / "out"
    result = librispeech.main(["--root", str(root), "--splits", "dev-clean", "test-clean",
                               "--out-dir", str(out), "--quiet", "--workers", "3"])
    assert result.counts == {"dev-clean_asr": 3, "test-clean_asr": 1}
    rows = read_manifest(str(out / "dev-clean_asr.tsv")) + read_manifest(str(out / "test-clean_asr.tsv"))
    pool = common.prompt_pools()["asr"]
    for row in rows:
        rel, n, rate, text = expected[row.id]
        assert row.audio == [rel] and os.path.isfile(root / rel)
        assert row.n_frames == to_16k(n, rate)
        assert row.tgt_text == text.lower() and row.task == "asr" and row.with_speech
        assert row.prompt in pool
    assert {r.n_frames for r in rows if r.id.startswith("84-")} == {3200, 4800}  # 8 kHz file counted at 16 kHz

    skipped = dict(result.report.entries)
    bad = root / "dev-clean" / "174" / "50561"
    assert skipped == {
        str(bad / "174-50561-0001.flac"): "empty transcript (174-50561.trans.txt line 2)",
        str(bad / "174-50561-0002.flac"): "audio file not found",
        str(bad / "174-50561-0003.flac"): "no transcript line",
        str(bad / "174-50561-0004.flac"): skipped[str(bad / "174-50561-0004.flac")],
    }
    assert skipped[str(bad / "174-50561-0004.flac")].startswith("unreadable audio")
    listed = (out / "skipped.tsv").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in listed) == sorted(skipped)
    err = capsys.readouterr().err
    assert "wrote 4 examples, skipped 4" in err and "1 x no transcript line" in err and str(out / "skipped.tsv") in err


def test_same_seed_same_bytes_for_any_worker_count_and_keep_case(libri, tmp_path):
    root, _ = libri
    texts = []
    for name, extra in (("a", ["--workers", "1"]), ("b", ["--workers", "4"]), ("c", ["--keep-case"])):
        librispeech.main(["--root", str(root), "--splits", "dev-clean", "--out-dir", str(tmp_path / name),
                          "--quiet", *extra])
        texts.append((tmp_path / name / "dev-clean_asr.tsv").read_text())
    assert texts[0] == texts[1]
    assert "GO DO YOU HEAR" in texts[2] and "go do you hear" in texts[0]


def test_progress_bars_go_to_stderr_unless_quiet(libri, tmp_path, capsys):
    root, _ = libri
    args = ["--root", str(root), "--splits", "test-clean", "--workers", "2"]
    librispeech.main(args + ["--out-dir", str(tmp_path / "a")])
    loud = capsys.readouterr()
    librispeech.main(args + ["--out-dir", str(tmp_path / "b"), "--quiet"])
    quiet = capsys.readouterr()
    assert loud.out == quiet.out == ""
    assert "reading headers" in loud.err and "scanning test-clean" in loud.err
    assert "reading headers" not in quiet.err and "wrote 1 examples, skipped none" in quiet.err


def test_audio_root_makes_paths_relative_to_it(libri, tmp_path):
    root, expected = libri
    librispeech.main(["--root", str(root), "--splits", "test-clean", "--out-dir", str(tmp_path / "o"), "--quiet",
                      "--audio-root", str(root / "test-clean")])
    (row,) = read_manifest(str(tmp_path / "o" / "test-clean_asr.tsv"))
    assert row.audio == ["1089/134686/1089-134686-0000.flac"]


def test_missing_split_and_empty_result_are_errors(libri, tmp_path):
    root, _ = libri
    with pytest.raises(SystemExit, match="split folder .*train-other-500 not found"):
        librispeech.main(["--root", str(root), "--splits", "train-other-500", "--out-dir", str(tmp_path), "--quiet"])
    empty = tmp_path / "empty" / "dev-clean" / "1" / "2"
    empty.mkdir(parents=True)
    (empty / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    with pytest.raises(SystemExit, match="no usable examples"):
        librispeech.main(["--root", str(tmp_path / "empty"), "--splits", "dev-clean", "--out-dir",
                          str(tmp_path / "o2"), "--quiet"])
    assert not (tmp_path / "o2" / "dev-clean_asr.tsv").exists()


def test_help_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "manifests.librispeech", "--help"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m manifests.librispeech" in proc.stdout and "--audio-root" in proc.stdout
