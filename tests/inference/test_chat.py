"""python -m wavllm_fairseq.chat: a loop at a terminal, ``audio<TAB>prompt`` lines from a pipe."""
import io
import os
import subprocess
import sys

from tests.helpers import MAX_NEW_TOKENS, REPO



def test_scripted_lines_get_the_api_answers_in_order_and_a_bad_line_is_named(tiny_model, tiny_checkpoint,
                                                                             speech_corpus, tmp_path):
    clip, other = str(speech_corpus / "audio/test_0.wav"), str(speech_corpus / "audio/test_1.wav")
    lines = [
        f"{other}\tWhat is said?",
        "Transcribe the audio clip into text.",  # no tab: about --audio
        f"{tmp_path / 'missing.wav'}\tTranscribe.",
        "",
        "\tWho speaks?",  # empty audio field: about --audio
    ]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "wavllm_fairseq.chat", "--path", tiny_checkpoint, "--audio", clip, "--device", "cpu",
         "--max-new-tokens", str(MAX_NEW_TOKENS), "--beam", "2"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    expected = tiny_model.generate([other, clip, clip], ["What is said?", "Transcribe the audio clip into text.",
                                                         "Who speaks?"], beam=2, max_new_tokens=MAX_NEW_TOKENS)
    assert proc.stdout.split("\n") == [expected[0], expected[1], "", expected[2], ""]
    assert f"standard input, line 3: {tmp_path / 'missing.wav'}: audio file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_at_a_terminal_questions_about_the_clip_are_answered_in_a_loop(tiny_model, tiny_checkpoint, speech_corpus,
                                                                     monkeypatch, capsys):
    from wavllm_fairseq import chat

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clip, other = str(speech_corpus / "audio/test_0.wav"), str(speech_corpus / "audio/test_1.wav")
    questions = ["What is said?", f":audio {other}", "Who speaks?", ":text", "Repeat after me: the sun", ""]
    monkeypatch.setattr(sys, "stdin", Terminal("\n".join(questions) + "\n"))
    status = chat.main(["--path", str(tiny_checkpoint), "--audio", clip, "--device", "cpu",
                        "--max-new-tokens", str(MAX_NEW_TOKENS)])
    expected = tiny_model.generate([clip, other, None], ["What is said?", "Who speaks?", "Repeat after me: the sun"],
                                   max_new_tokens=MAX_NEW_TOKENS)
    assert status == 0
    # a prompt before every line read; the answers stream in after theirs
    assert capsys.readouterr().out == "> {}\n> > {}\n> > {}\n> ".format(*expected)
