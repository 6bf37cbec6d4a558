import json

import pytest

from manifests import common, from_csv, from_jsonl
from wavllm_fairseq.data.manifest import read_manifest


def test_jsonl_fields_mapped_by_flags_with_multi_audio_and_pool_prompts(tmp_path, write_audio, to_16k):
    write_audio(tmp_path / "a.wav", 1600)
    write_audio(tmp_path / "sub" / "b.flac", 4410, 44100)
    records = [{"key": "r1", "wav": "a.wav", "words": "hello\tthere"},
               {"key": "r2", "wav": ["a.wav", "sub/b.flac"], "words": "two files"},
               {"key": "r3", "wav": "a.wav|sub/b.flac", "words": "joined"},
               {"key": "r4", "wav": "a.wav", "words": "  "},
               {"key": "r5", "words": "no audio"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "x.tsv"
    result = from_jsonl.main(["--input", str(tmp_path / "in.jsonl"), "--out", str(out), "--audio-field", "wav",
                              "--text-field", "words", "--id-field", "key", "--task", "asr", "--quiet"])
    rows = read_manifest(str(out))
    both = 1600 + to_16k(4410, 44100)
    assert [(r.id, r.audio, r.n_frames, r.tgt_text) for r in rows] == [
        ("r1", ["a.wav"], 1600, "hello there"), ("r2", ["a.wav", "sub/b.flac"], both, "two files"),
        ("r3", ["a.wav", "sub/b.flac"], both, "joined")]
    assert all(r.prompt in common.prompt_pools()["asr"] and r.task == "asr" for r in rows)
    assert [reason for _, reason in result.report.entries] == [
        f"empty text in field 'words' ({tmp_path / 'in.jsonl'} record 3)", "no audio in field 'wav'"]


def test_csv_with_fixed_prompt_and_no_targets(tmp_path, write_audio):
    write_audio(tmp_path / "clips" / "1.wav", 800)
    (tmp_path / "in.tsv").write_text("file\tnote\nclips/1.wav\tx\nclips/2.wav\ty\n")
    result = from_csv.main(["--input", str(tmp_path / "in.tsv"), "--delimiter", "tab", "--out",
                            str(tmp_path / "o.tsv"), "--audio-field", "file", "--task", "caption",
                            "--prompt", "Describe the sound.", "--quiet"])
    (row,) = read_manifest(result.manifests["o"])
    assert (row.id, row.prompt, row.tgt_text, row.task) == ("caption-000000", "Describe the sound.", "", "caption")
    assert result.report.entries == [(str(tmp_path / "clips" / "2.wav"), "audio file not found")]


def test_task_without_pool_needs_a_prompt(tmp_path, capsys):
    (tmp_path / "in.csv").write_text("audio,text\na.wav,hi\n")
    with pytest.raises(SystemExit):
        from_csv.main(["--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "o.tsv"), "--task", "caption"])
    assert "no prompt pool for --task 'caption'" in capsys.readouterr().err
