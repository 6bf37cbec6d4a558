"""A tiny trained checkpoint, the API's model loaded from it, and a server on a loopback port."""
import threading
import time

import pytest

from tests.helpers import MAX_NEW_TOKENS, free_port, train_args


@pytest.fixture(scope="session")
def tiny_checkpoint(speech_corpus, tmp_path_factory, run_fairseq):
    """``wavllm_tiny`` after a few updates: nearly random, but it decodes several tokens per answer."""
    save = tmp_path_factory.mktemp("tiny_checkpoint")
    run_fairseq("train", train_args(speech_corpus, save, 3), cwd=save)
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from wavllm_fairseq import WavLLM

    return WavLLM.from_checkpoint(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def server_url(tiny_model):
    """The server on a loopback port, in this process (the model is shared with the API tests)."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from wavllm_fairseq.server.app import create_app
    from wavllm_fairseq.server.openai_format import Limits

    limits = Limits(max_audio_seconds=10.0, max_body_bytes=2_000_000, max_new_tokens=MAX_NEW_TOKENS)
    app = create_app(tiny_model, "tiny", limits, max_batch=32, batch_wait_ms=20.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)
