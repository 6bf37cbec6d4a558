"""The OpenAI-compatible server, driven by the real ``openai`` client and by raw HTTP requests."""
import base64
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile

from tests.helpers import MAX_NEW_TOKENS, REPO, free_port

from wavllm_fairseq.data.manifest import read_manifest
from wavllm_fairseq.inference import Decoding
from wavllm_fairseq.text.templates import Turn

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def clips(speech_corpus):
    """(path, prompt) of every clip of the corpus."""
    rows = [r for split in ("train", "valid", "test") for r in read_manifest(str(speech_corpus / f"{split}.tsv"))]
    return [(str(speech_corpus / r.audio[0]), r.prompt) for r in rows if r.with_speech]


def audio_part(path, fmt="wav"):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def user_message(path, prompt):
    return {"role": "user", "content": [{"type": "text", "text": prompt}, audio_part(path)]}


def alone(model, path, prompt):
    return model.generate([path], [prompt], max_new_tokens=MAX_NEW_TOKENS)[0]


def test_openai_client_gets_the_api_answer_plain_and_streamed(server_url, tiny_model, clips):
    url, _ = server_url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    path, prompt = clips[0]
    expected = alone(tiny_model, path, prompt)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    response = client.chat.completions.create(model="tiny", messages=[user_message(path, prompt)])
    choice = response.choices[0]
    assert choice.message.content == expected and choice.message.role == "assistant"
    tokens = tiny_model.answer([tiny_model.query(path, prompt)], Decoding(max_new_tokens=MAX_NEW_TOKENS))[0].tokens
    assert response.usage.completion_tokens == len(tokens)
    assert response.usage.prompt_tokens > response.usage.completion_tokens  # speech frames and template
    assert choice.finish_reason == ("length" if len(tokens) == MAX_NEW_TOKENS else "stop")

    chunks = list(client.chat.completions.create(model="tiny", messages=[user_message(path, prompt)], stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == expected
    assert len(deltas) >= 2  # the answer arrives in pieces as tokens are decided
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.completion_tokens == len(tokens)


def test_concurrent_requests_are_batched_and_each_answer_is_the_request_alone(server_url, tiny_model, clips):
    url, app = server_url
    requests = [(clips[i % len(clips)][0], prompt) for i, prompt in
                enumerate(["Transcribe the audio clip into text.", "What is said?", "Who speaks?"] * 8)]
    expected = [alone(tiny_model, path, prompt) for path, prompt in requests]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    rounds_before = len(app.state.batcher.batch_sizes)

    def ask(request):
        response = client.chat.completions.create(model="tiny", messages=[user_message(*request)], temperature=0)
        return response.choices[0].message.content

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(ask, requests))
    assert answers == expected
    rounds = app.state.batcher.batch_sizes[rounds_before:]
    assert sum(rounds) == len(requests) and max(rounds) > 1, rounds


def test_system_message_and_earlier_turns_use_the_chat_template(server_url, tiny_model, clips):
    url, _ = server_url
    path, prompt = clips[1]
    messages = [
        {"role": "system", "content": "You answer briefly."},
        user_message(path, prompt),
        {"role": "assistant", "content": "a dog"},
        {"role": "user", "content": [{"type": "text", "text": "And who speaks?"}]},
    ]
    wave, _ = soundfile.read(path, dtype="float32")
    import torch

    query = tiny_model.conversation_query(
        [Turn("user", prompt, True), Turn("assistant", "a dog"), Turn("user", "And who speaks?")],
        "You answer briefly.", torch.from_numpy(wave))
    expected = tiny_model.answer([query], Decoding(max_new_tokens=MAX_NEW_TOKENS))[0].text
    response = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == expected
    text_only = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                           json={"messages": [{"role": "user", "content": "Repeat after me: the sun"}]})
    assert text_only.json()["choices"][0]["message"]["content"] == tiny_model.generate(
        [None], ["Repeat after me: the sun"], max_new_tokens=MAX_NEW_TOKENS)[0]


def test_n_samples_several_choices(server_url, clips):
    url, _ = server_url
    response = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "messages": [user_message(*clips[0])], "n": 3, "temperature": 1.5, "top_p": 0.95, "max_tokens": 5})
    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(isinstance(c["message"]["content"], str) for c in choices)
    assert response.json()["usage"]["completion_tokens"] <= 15


def wav_bytes(seconds):
    out = io.BytesIO()
    soundfile.write(out, np.random.default_rng(0).uniform(-0.1, 0.1, int(16000 * seconds)), 16000, format="WAV")
    return out.getvalue()


def audio_request(data: bytes, fmt="wav"):
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "Transcribe."}, part]}]}


BAD_REQUESTS = {
    "invalid base64": ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "%%%not base64", "format": "wav"}}]}]},
        400, "is not valid base64"),
    "not audio": (audio_request(b"<html>expired link</html>" * 20), 400, "not audio that can be decoded"),
    "unsupported format": (audio_request(wav_bytes(1), "aac"), 400, "unsupported audio format 'aac'"),
    "too long": (audio_request(wav_bytes(11)), 400, "longer than this server's limit of 10 s"),
    "too large": (audio_request(wav_bytes(70)), 413, "larger than this server's limit"),
    "empty messages": ({"messages": []}, 400, "'messages' must be a non-empty list"),
    "max_tokens over the limit": ({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10_000}, 400,
                                  "'max_tokens' must be an integer from 1 to"),
    "image part": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
                   400, "unsupported content part type 'image_url'"),
    "answer last": ({"messages": [{"role": "assistant", "content": "Hi"}]}, 400, "must end with a user turn"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server_url, case):
    url, _ = server_url
    body, status, message = BAD_REQUESTS[case]
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_unknown_fields_are_tolerated_and_client_paths_are_never_opened(server_url, clips, tmp_path):
    url, _ = server_url
    body = {"messages": [{"role": "user", "content": "Repeat after me: hello", "name": "me"}], "seed": 1,
            "frequency_penalty": 0, "model": "whatever", "user": "u", "some_future_field": {"x": 1}}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    # A path (or URL) where base64 data belongs is data to decode, never a file to open.
    part = {"type": "input_audio", "input_audio": {"data": clips[0][0], "format": "wav"}}
    response = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                          json={"messages": [{"role": "user", "content": [part]}]})
    assert response.status_code == 400 and "base64" in response.json()["error"]["message"]
    not_json = httpx.post(f"{url}/v1/chat/completions", content=b"{nope", timeout=60)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["message"] == "Not Found"


def test_serve_command_listens_on_loopback_and_checks_the_api_key(tiny_checkpoint, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "wavllm_fairseq.serve", "--path", tiny_checkpoint,
                             "--port", str(port), "--api-key", "s3cret", "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, open(tmp_path / "serve.log").read()
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        refused = httpx.get(f"http://127.0.0.1:{port}/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret")
        assert [m.id for m in client.models.list().data] == ["checkpoint_last.pt"]
        wrong = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    finally:
        proc.terminate()
        proc.wait(30)
    assert f"Uvicorn running on http://127.0.0.1:{port}" in open(tmp_path / "serve.log").read()
