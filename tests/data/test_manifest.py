import pytest

from wavllm_fairseq.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest

HEADER = "id\taudio\tn_frames\tprompt\ttgt_text\twith_speech\n"


def write(tmp_path, text, name="m.tsv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_columns_found_by_name_in_any_order(tmp_path):
    p = write(tmp_path, "with_speech\tprompt\tid\tn_frames\taudio\ttgt_text\nTrue\tSay it.\tu1\t320\ta.wav\thello\n")
    (row,) = read_manifest(p)
    assert (row.id, row.audio, row.n_frames, row.prompt, row.tgt_text, row.with_speech, row.line) == (
        "u1", ["a.wav"], 320, "Say it.", "hello", True, 2)


def test_round_trip_with_multi_audio_and_text_only(tmp_path):
    rows = [
        ManifestRow("a", ["x.wav", "y.wav"], 640, "Is there only one speaker?", "No", True, task="sv"),
        ManifestRow("b", [], 0, "Tell a joke.", "No.", False, task="text"),
    ]
    p = str(tmp_path / "m.tsv")
    assert write_manifest(p, rows) == 2
    back = read_manifest(p)
    assert [(r.id, r.audio, r.with_speech, r.task) for r in back] == [
        ("a", ["x.wav", "y.wav"], True, "sv"), ("b", [], False, "text")]


def test_target_column_is_optional(tmp_path):
    p = write(tmp_path, "id\taudio\tn_frames\tprompt\twith_speech\nu1\ta.wav\t10\tp\tTrue\n")
    assert read_manifest(p)[0].tgt_text is None


@pytest.mark.parametrize(
    "body, line, example_id, reason",
    [
        ("u1\ta.wav\t10\tp\tt\n", 2, "u1", "expected 6 tab-separated fields, found 5"),
        ("u1\t\t0\t \tt\tFalse\n", 2, "u1", "empty prompt in a row without speech"),
        ("u1\ta.wav\t10\tp\tt\tmaybe\n", 2, "u1", "with_speech must be True or False"),
        ("u1\ta.wav\tten\tp\tt\tTrue\n", 2, "u1", "n_frames must be an integer"),
        ("u1\ta.wav\t10\tp\tt\tTrue\nu1\tb.wav\t10\tp\tt\tTrue\n", 3, "u1", "duplicate id"),
        ("u1\t\t10\tp\tt\tTrue\n", 2, "u1", "audio is empty"),
    ],
)
def test_bad_rows_name_file_line_and_id(tmp_path, body, line, example_id, reason):
    p = write(tmp_path, HEADER + body)
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert (e.value.path, e.value.line, e.value.example_id) == (p, line, example_id)
    assert reason in str(e.value) and p in str(e.value) and f"line {line}" in str(e.value)


def test_spoken_query_has_an_empty_prompt(tmp_path):
    # The official release's SQQA.tsv: the question is in the speech.
    p = write(tmp_path, HEADER + "u1\ta.wav\t10\t\tanswer\tTrue\n")
    assert read_manifest(p)[0].prompt == ""


def test_missing_required_column(tmp_path):
    p = write(tmp_path, "id\taudio\tprompt\ttgt_text\twith_speech\nu1\ta.wav\tp\tt\tTrue\n")
    with pytest.raises(ManifestError, match="missing required column.*n_frames") as e:
        read_manifest(p)
    assert e.value.line == 1


def test_writer_rejects_tabs_instead_of_rewriting(tmp_path):
    with pytest.raises(ValueError, match="id 'a'.*prompt"):
        write_manifest(str(tmp_path / "m.tsv"), [ManifestRow("a", ["x.wav"], 1, "a\tb", "t", True)])


def test_a_manifest_saved_by_a_spreadsheet_reads_byte_order_mark_and_crlf(tmp_path):
    p = tmp_path / "m.tsv"
    text = HEADER + "u1\ta.wav\t10\tSay it.\thello\tTrue\n" + "u2\tb.wav\t20\tSay it.\tbye\tFalse\n"
    p.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    rows = read_manifest(str(p))
    assert [(r.id, r.audio, r.n_frames, r.tgt_text, r.with_speech, r.line) for r in rows] == [
        ("u1", ["a.wav"], 10, "hello", True, 2), ("u2", ["b.wav"], 20, "bye", False, 3)]


def test_bytes_that_are_not_utf8_name_the_line_id_and_column(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_bytes(HEADER.encode() + b"u1\ta.wav\t10\tp\tt\tTrue\n" + b"u2\tb.wav\t10\tp\tcaf\xe9\tTrue\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(str(p))
    assert (e.value.line, e.value.example_id) == (3, "u2")
    assert "column tgt_text is not UTF-8 text (byte 0xe9)" in str(e.value) and str(p) in str(e.value)


def test_a_manifest_error_survives_pickling_as_it_crosses_from_a_dataloader_worker():
    import pickle

    error = pickle.loads(pickle.dumps(ManifestError("m.tsv", 3, "u2", "audio holds NaN or infinite samples")))
    assert isinstance(error, ManifestError)
    assert (error.path, error.line, error.example_id) == ("m.tsv", 3, "u2")
    assert str(error) == "m.tsv, line 3, id 'u2': audio holds NaN or infinite samples"
