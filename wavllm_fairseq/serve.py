"""An OpenAI-compatible server for a trained model, with a web page at ``/``.

    python -m wavllm_fairseq.serve --path checkpoint.pt --port 8000

Needs the ``serve`` extra (``pip install -e .[serve]``: FastAPI and uvicorn).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .chat import add_model_arguments, load_model
from .errors import install_excepthook
from .server.openai_format import Limits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wavllm_fairseq.serve", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    limits = Limits()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ requests; "
                                          "default: the WAVLLM_API_KEY environment variable, else none")
    parser.add_argument("--model-name", help="the model's id in /v1/models and responses; default: the checkpoint's file name")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long a request waits for others to decode with")
    parser.add_argument("--max-audio-seconds", type=float, default=limits.max_audio_seconds)
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes)
    parser.add_argument("--max-completion-tokens", type=int, default=limits.max_new_tokens,
                        help="largest max_tokens a request may ask for; also the default")
    parser.add_argument("--max-n", type=int, default=limits.max_choices, help="largest n (choices per request)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from .server.app import create_app
    except ImportError as e:
        print(f"wavllm_fairseq: error: the server needs the 'serve' extra (pip install -e .[serve]): {e}",
              file=sys.stderr)
        return 1
    model = load_model(args)
    limits = Limits(args.max_audio_seconds, args.max_body_bytes, args.max_completion_tokens, args.max_n)
    app = create_app(model, args.model_name or os.path.basename(args.path), limits,
                     api_key=args.api_key or os.environ.get("WAVLLM_API_KEY") or None,
                     max_batch=args.batch_size, batch_wait_ms=args.batch_wait_ms)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
