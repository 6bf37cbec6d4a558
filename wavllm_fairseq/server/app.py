"""The HTTP server: OpenAI-compatible chat completions over a batching worker, a model list, a
health check and a web page. Every refusal is OpenAI's error object with a 4xx status, and no
request can stop the server."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from importlib import resources
from typing import Any, AsyncIterator, Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..inference import WavLLM
from .batcher import Batcher, Job
from .openai_format import Completion, Limits, RequestError, error_body, finish_reason, parse_chat_request, usage

logger = logging.getLogger(__name__)


def create_app(model: WavLLM, model_name: str, limits: Limits = Limits(), api_key: Optional[str] = None,
               max_batch: int = 16, batch_wait_ms: float = 5.0) -> FastAPI:
    app = FastAPI(title="wavllm_fairseq", docs_url=None, redoc_url=None, openapi_url=None)
    batcher = Batcher(model, max_batch, batch_wait_ms)
    app.state.batcher = batcher
    app.router.on_shutdown.append(batcher.close)
    created = int(time.time())

    @app.exception_handler(RequestError)
    async def refused(_request: Request, error: RequestError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException):
        return JSONResponse(error_body(str(error.detail), "invalid_request_error"), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception):
        logger.exception("request failed")
        return JSONResponse(error_body(f"internal error: {type(error).__name__}: {error}", "server_error"),
                            status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise RequestError("invalid or missing API key (Authorization: Bearer ...)", status=401,
                               code="invalid_api_key")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                             "owned_by": "wavllm_fairseq"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = await _json_body(request, limits.max_body_bytes)
        chat = await asyncio.to_thread(parse_chat_request, body, model, limits)  # decodes the audio
        completion = Completion(model_name)
        if not chat.stream:
            job = Job([chat.query] * chat.n, chat.decoding)
            answers = await asyncio.wrap_future(batcher.submit(job))
            return completion.response(chat, answers)
        return StreamingResponse(_stream(batcher, model, chat, completion), media_type="text/event-stream")

    return app


async def _json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the request body is not valid JSON ({e})") from None


def _too_large(limit: int) -> RequestError:
    return RequestError(f"the request body is larger than this server's limit of {limit} bytes", status=413,
                        code="request_too_large")


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _stream(batcher: Batcher, model: WavLLM, chat, completion: Completion) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: a role chunk, text deltas as tokens are
    decided (at beam 1), a finishing chunk per choice, usage if asked for, then ``[DONE]``."""
    loop = asyncio.get_running_loop()
    partial: "asyncio.Queue[tuple]" = asyncio.Queue()

    def on_tokens(choice: int, tokens: List[int]) -> None:  # worker thread
        loop.call_soon_threadsafe(partial.put_nowait, (choice, tokens))

    job = Job([chat.query] * chat.n, chat.decoding, on_tokens)
    result = asyncio.wrap_future(batcher.submit(job))
    sent: Dict[int, str] = {i: "" for i in range(chat.n)}
    yield _sse(completion.chunk([completion.delta(i, {"role": "assistant", "content": ""}) for i in range(chat.n)]))
    while True:
        getter = asyncio.ensure_future(partial.get())
        await asyncio.wait({getter, result}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        choice, tokens = getter.result()
        text = model.text(tokens)
        # A prefix of tokens may end inside a character; send text only once it is settled.
        if text.startswith(sent[choice]) and len(text) > len(sent[choice]) and not text.endswith("\ufffd"):
            yield _sse(completion.chunk([completion.delta(choice, {"content": text[len(sent[choice]):]})]))
            sent[choice] = text
    try:
        answers = await result
    except Exception as e:  # the headers are sent: report the failure in the stream, as OpenAI does
        logger.exception("decoding failed")
        yield _sse(error_body(f"internal error: {type(e).__name__}: {e}", "server_error"))
        return
    for i, answer in enumerate(answers):
        rest = answer.text[len(sent[i]):] if answer.text.startswith(sent[i]) else answer.text
        if rest:
            yield _sse(completion.chunk([completion.delta(i, {"content": rest})]))
        yield _sse(completion.chunk([completion.delta(i, {}, finish_reason(answer))]))
    if chat.include_usage:
        yield _sse(completion.chunk([], usage(chat, answers)))
    yield "data: [DONE]\n\n"
