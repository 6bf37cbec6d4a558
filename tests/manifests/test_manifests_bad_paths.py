"""Bad input and output paths end every manifest script with one line, not a traceback."""
import os

import pytest

from manifests import from_csv, from_jsonl, librispeech, sqa
from wavllm_fairseq.data.manifest import read_manifest

TABLE_SCRIPTS = {
    "sqa": (sqa.main, []),
    "from_jsonl": (from_jsonl.main, ["--task", "asr"]),
    "from_csv": (from_csv.main, ["--task", "asr"]),
}


def exit_message(main, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return str(e.value.code)


@pytest.mark.parametrize("script", sorted(TABLE_SCRIPTS))
def test_a_missing_input_or_a_folder_given_as_input_is_one_line(tmp_path, script):
    main, extra = TABLE_SCRIPTS[script]
    missing = tmp_path / "nothing.json"
    message = exit_message(main, ["--input", str(missing), "--out", str(tmp_path / "x.tsv"), "--quiet", *extra])
    assert message == f"error: --input {missing}: no such file"
    message = exit_message(main, ["--input", str(tmp_path), "--out", str(tmp_path / "x.tsv"), "--quiet", *extra])
    assert message.startswith(f"error: --input {tmp_path} is a folder")


def jsonl_input(tmp_path, write_audio):
    write_audio(tmp_path / "a.wav", 1600)
    (tmp_path / "in.jsonl").write_text('{"audio": "a.wav", "text": "hello"}\n')
    return ["--input", str(tmp_path / "in.jsonl"), "--text-field", "text", "--task", "asr", "--quiet"]


def test_an_output_path_under_a_regular_file_is_one_line(tmp_path, write_audio):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "x.tsv"
    message = exit_message(from_jsonl.main, jsonl_input(tmp_path, write_audio) + ["--out", str(out)])
    assert message.startswith(f"error: cannot write {out}: ")


def test_an_output_folder_under_a_regular_file_is_one_line_for_the_folder_scripts(tmp_path, write_audio):
    write_audio(tmp_path / "LibriSpeech" / "dev-clean" / "1" / "2" / "1-2-0000.flac", 1600, format="FLAC")
    (tmp_path / "LibriSpeech" / "dev-clean" / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out_dir = tmp_path / "file.txt" / "manifests"
    message = exit_message(librispeech.main, ["--root", str(tmp_path / "LibriSpeech"), "--splits", "dev-clean",
                                              "--out-dir", str(out_dir), "--quiet"])
    assert message.startswith(f"error: cannot write {out_dir}")


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs /sys, a read-only file system")
def test_an_output_on_a_read_only_file_system_is_one_line(tmp_path, write_audio):
    out = "/sys/wavllm_manifests/x.tsv"
    message = exit_message(from_jsonl.main, jsonl_input(tmp_path, write_audio) + ["--out", out])
    assert message.startswith(f"error: cannot write {out}: ")


def test_a_table_saved_by_a_spreadsheet_is_read_and_one_in_another_encoding_is_one_line(tmp_path, write_audio):
    write_audio(tmp_path / "a.wav", 1600)
    (tmp_path / "in.csv").write_bytes(b"\xef\xbb\xbfaudio,text\r\na.wav,hello there\r\n")
    out = tmp_path / "x.tsv"
    from_csv.main(["--input", str(tmp_path / "in.csv"), "--out", str(out), "--text-field", "text",
                   "--task", "asr", "--quiet"])
    assert [(r.audio, r.tgt_text) for r in read_manifest(str(out))] == [(["a.wav"], "hello there")]
    (tmp_path / "latin1.csv").write_bytes("audio,text\na.wav,café\n".encode("latin-1"))
    message = exit_message(from_csv.main, ["--input", str(tmp_path / "latin1.csv"), "--out", str(out),
                                           "--text-field", "text", "--task", "asr", "--quiet"])
    assert message == f"error: {tmp_path / 'latin1.csv'} is not UTF-8 text (byte 0xe9); save it as UTF-8"


def test_a_concat_folder_under_a_regular_file_is_one_line(tmp_path, write_audio):
    from manifests import voxceleb

    for speaker in ("id1", "id2"):
        for u in (1, 2):
            write_audio(tmp_path / "vox" / "wav" / speaker / "v" / f"{u:05d}.wav", 1600)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    concat = tmp_path / "file.txt" / "joined"
    message = exit_message(voxceleb.main, ["--root", str(tmp_path / "vox"), "--out", str(tmp_path / "sv.tsv"),
                                           "--n-pairs", "2", "--mode", "concat", "--concat-dir", str(concat),
                                           "--quiet"])
    assert message.startswith(f"error: cannot write {concat}: ")
