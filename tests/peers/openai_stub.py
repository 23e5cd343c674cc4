"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests, scripted per test.

Each endpoint (chat completions, audio transcriptions, audio speech) has a queue of scripted responses;
each request takes the next one (an empty queue answers 500 "nothing scripted"). Responses: a chat SSE
stream of chunk dicts (text deltas, tool-call deltas as the real API splits them, a usage chunk), an HTTP
error, a `Hold` inside a stream (the connection stays open without data until the gate is set), a `Hang`
before any response headers, a transcription JSON, a speech PCM stream. Every request is recorded.
Runs in the test's own event loop (uvicorn + starlette, both installed with the `mcp` SDK).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True, slots=True)
class Hold:
    """Inside a stream: send nothing more until `gate` is set (the stub sets every gate on stop)."""

    gate: asyncio.Event


@dataclass(frozen=True, slots=True)
class Hang:
    """Send no response at all (not even headers) until `gate` is set; then answer `then`."""

    gate: asyncio.Event
    then: Any = None


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    message: str = "scripted failure"


@dataclass(frozen=True, slots=True)
class ChatStream:
    """SSE chunks (dicts) with optional `Hold`s between them; `done` sends the final `[DONE]`."""

    items: tuple[dict[str, Any] | Hold, ...]
    done: bool = True


@dataclass(frozen=True, slots=True)
class TranscriptionReply:
    text: str


@dataclass(frozen=True, slots=True)
class SpeechStream:
    """Raw 24 kHz s16le bytes sent in pieces, with optional `Hold`s between them."""

    parts: tuple[bytes | Hold, ...]


@dataclass(frozen=True, slots=True)
class Recorded:
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)


# --- builders for chat chunks shaped like the real API's ------------------------------------------------


def _chunk(choices: list[dict[str, Any]], *, usage: dict[str, int] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "stub-model",
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _usage_chunk(usage: tuple[int, int] | None) -> list[dict[str, Any]]:
    if usage is None:
        return []
    prompt, completion = usage
    totals = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return [_chunk([], usage=totals)]


def text_chunks(pieces: Iterable[str], *, usage: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """A role chunk, one chunk per text piece, a `stop` chunk and (optionally) a usage chunk."""
    out = [_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    out += [_chunk([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in pieces]
    out.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    return out + _usage_chunk(usage)


def tool_call_chunks(
    calls: Iterable[tuple[str, str, Iterable[str]]],
    *,
    text: Iterable[str] = (),
    usage: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Optional text, then for each (call_id, name, argument pieces): a delta with index, id, type and name
    and empty arguments, then one delta per argument piece; then finish_reason `tool_calls`."""
    out = [_chunk([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}])]
    out += [_chunk([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in text]
    for index, (call_id, name, pieces) in enumerate(calls):
        head = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        out.append(_chunk([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]))
        for piece in pieces:
            part = {"index": index, "function": {"arguments": piece}}
            out.append(_chunk([{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}]))
    out.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    return out + _usage_chunk(usage)


# --- the server ---------------------------------------------------------------------------------------


class OpenAIStub:
    """Start with `async with OpenAIStub() as stub:`; point the client at `stub.base_url`."""

    def __init__(self) -> None:
        self.chat: deque[Any] = deque()
        self.transcriptions: deque[Any] = deque()
        self.speech: deque[Any] = deque()
        self.requests: list[Recorded] = []
        self._arrived = asyncio.Condition()
        self._gates: list[asyncio.Event] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def gate(self) -> asyncio.Event:
        """A new gate for `Hold`/`Hang`; every gate is released when the stub stops."""
        event = asyncio.Event()
        self._gates.append(event)
        return event

    def requests_to(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    async def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until at least `count` requests have arrived."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def __aenter__(self) -> OpenAIStub:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
                Route("/v1/audio/speech", self._speech, methods=["POST"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # listening before uvicorn runs: clients may connect at once
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))

    async def stop(self) -> None:
        for gate in self._gates:
            gate.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None

    async def _record(self, request: Request) -> Recorded:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("content-type", "").startswith("multipart/form-data"):
            fields: dict[str, str] = {}
            files: dict[str, tuple[str, bytes]] = {}
            async with request.form() as form:  # closes the uploaded files' temp storage
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        fields[key] = value
                    else:
                        files[key] = (value.filename or "", await value.read())
            rec = Recorded(request.url.path, headers, None, fields, files)
        else:
            body = await request.body()
            rec = Recorded(request.url.path, headers, json.loads(body) if body else None)
        async with self._arrived:
            self.requests.append(rec)
            self._arrived.notify_all()
        return rec

    async def _next(self, queue: deque[Any]) -> Any:
        script = queue.popleft() if queue else HttpError(500, "stub: nothing scripted")
        while isinstance(script, Hang):
            await script.gate.wait()
            script = script.then if script.then is not None else HttpError(504, "stub: hung")
        return script

    async def _chat(self, request: Request) -> Response:
        await self._record(request)
        script = await self._next(self.chat)
        if isinstance(script, HttpError):
            return _error(script)
        assert isinstance(script, ChatStream), script
        return StreamingResponse(self._sse(script), media_type="text/event-stream")

    async def _sse(self, script: ChatStream) -> AsyncIterator[bytes]:
        for item in script.items:
            if isinstance(item, Hold):
                await item.gate.wait()
                continue
            yield f"data: {json.dumps(item)}\n\n".encode()
        if script.done:
            yield b"data: [DONE]\n\n"

    async def _transcriptions(self, request: Request) -> Response:
        await self._record(request)
        script = await self._next(self.transcriptions)
        if isinstance(script, HttpError):
            return _error(script)
        assert isinstance(script, TranscriptionReply), script
        return JSONResponse({"text": script.text})

    async def _speech(self, request: Request) -> Response:
        await self._record(request)
        script = await self._next(self.speech)
        if isinstance(script, HttpError):
            return _error(script)
        assert isinstance(script, SpeechStream), script
        return StreamingResponse(_pcm_parts(script), media_type="application/octet-stream")


async def _pcm_parts(script: SpeechStream) -> AsyncIterator[bytes]:
    for part in script.parts:
        if isinstance(part, Hold):
            await part.gate.wait()
        else:
            yield part


def _error(script: HttpError) -> Response:
    body = {"error": {"message": script.message, "type": "server_error", "code": None}}
    return JSONResponse(body, status_code=script.status)
