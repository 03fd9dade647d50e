"""A small OpenAI-compatible chat server for a harmonia model (the future ``harmonia serve``).

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models`` (also without the ``/v1``
prefix), plus ``GET /health``. Messages are rendered with the tokenizer's chat template; a final
``assistant`` message is treated as a prefill (the reply continues it, as in a prefilling attack).
Generation is greedy and serialised by a lock, so ``temperature`` and ``top_p`` are accepted but
ignored, ``n`` must be 1 and streaming is not offered. Errors use OpenAI's
``{"error": {"message", "type"}}`` shape. Standard library only (``http.server``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

_ROLES = ("system", "user", "assistant")


class RequestError(Exception):
    """A client error, answered with HTTP 400 (or the given status)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def _content_text(content: Any, index: int) -> str:
    """A message's content: a string, or OpenAI's list of ``{"type": "text", "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise RequestError(f"messages[{index}].content must be a string or a list of text parts")


def render_messages(tokenizer: Any, messages: Any) -> str:
    """Render chat messages to the prompt text; a trailing assistant message becomes the prefill."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise RequestError(f"messages[{i}] needs a 'role' in {list(_ROLES)}")
        turns.append({"role": message["role"], "content": _content_text(message.get("content"), i)})
    prefill = ""
    if turns[-1]["role"] == "assistant":
        prefill = turns.pop()["content"]
    if not any(t["role"] == "user" for t in turns):
        raise RequestError("'messages' needs at least one user message")
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True) + prefill


class ChatService:
    """The model behind the server: renders, generates (one request at a time), counts tokens."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str = "harmonia",
        max_new_tokens: int = 256,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_new_tokens = max_new_tokens
        self.api_key = api_key
        self.created = int(time.time())
        self._lock = threading.Lock()

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def complete(self, request: Any) -> dict[str, Any]:
        from harmonia.evaluation.generation import generate

        if not isinstance(request, dict):
            raise RequestError("the request body must be a JSON object")
        if request.get("stream"):
            raise RequestError("streaming is not supported")
        if request.get("n", 1) != 1:
            raise RequestError("only n=1 is supported")
        max_tokens = request.get("max_completion_tokens", request.get("max_tokens", self.max_new_tokens))
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("'max_tokens' must be a positive integer")
        stop = request.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("'stop' must be a string or a list of strings")
        prompt = render_messages(self.tokenizer, request.get("messages"))
        max_tokens = min(max_tokens, self.max_new_tokens)
        with self._lock:
            text = generate(
                self.model,
                self.tokenizer,
                [prompt],
                max_new_tokens=max_tokens,
                batch_size=1,
                stop=stop,
                progress=False,
            )[0]
        prompt_tokens, completion_tokens = self._count(prompt), self._count(text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if completion_tokens >= max_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "harmonia"}
            ],
        }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(status, {"error": {"message": message, "type": kind, "code": int(status)}})

    def _authorised(self) -> bool:
        key = self.server.service.api_key
        if key is None or self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "invalid or missing API key")
        return False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send(HTTPStatus.OK, {"status": "ok"})
        elif path in ("/v1/models", "/models"):
            if self._authorised():
                self._send(HTTPStatus.OK, self.server.service.models())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            return
        raw = self.rfile.read(length) if length > 0 else b""
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(HTTPStatus.NOT_FOUND, f"no route POST {path}")
            return
        if not self._authorised():
            return
        try:
            request = json.loads(raw or b"null")
            self._send(HTTPStatus.OK, self.server.service.complete(request))
        except json.JSONDecodeError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the request body is not JSON: {exc.msg}")
        except RequestError as exc:
            self._error(exc.status, str(exc))
        except Exception as exc:  # a generation failure must reach the client, not kill the thread silently
            log.exception("chat completion failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: ChatService) -> None:
        super().__init__(address, _Handler)
        self.service = service


def create_server(
    model: Any,
    tokenizer: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "harmonia",
    max_new_tokens: int = 256,
    api_key: str | None = None,
) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0 picks a free one: read ``server.server_address``).

    Call ``serve_forever()`` (in a thread for tests) and ``shutdown()``/``server_close()`` to stop.
    """
    return _Server(
        (host, port),
        ChatService(model, tokenizer, model_name=model_name, max_new_tokens=max_new_tokens, api_key=api_key),
    )


def serve(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    max_new_tokens: int = 256,
    api_key: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
) -> None:
    """Load the model ``spec`` and serve it until interrupted."""
    from harmonia.models import load_model

    loaded = load_model(spec, dtype=dtype, device=device)
    server = create_server(
        loaded.model,
        loaded.tokenizer,
        host=host,
        port=port,
        model_name=model_name or spec,
        max_new_tokens=max_new_tokens,
        api_key=api_key,
    )
    bound_host, bound_port = server.server_address[:2]
    log.info("serving %s at http://%s:%s/v1", spec, bound_host, bound_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
