"""The ``openai`` generation backend against a server we did not write: llama.cpp's, through
``llama-cpp-python[server]`` (built from its sdist by ``make test``), serving the embedded SmolLM2 GGUF
itself. Every strategy and streaming, an adapter's model name the server serves and one it lacks, a
wrong model name and a server that is down. (A 500 and a slow server are in
``test_openai_backend_serve.py``: llama.cpp cannot be made to fail on demand.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import KEY, ChildServer, free_port
from tests.api.test_openai_backend_serve import QUESTION, assistant, remote_app

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (make test builds it)")

pytestmark = pytest.mark.slow


class LlamaCppServer(ChildServer):
    """``python -m llama_cpp.server`` on a free loopback port with a JSON config of model aliases."""

    name = "llama_cpp.server"

    def __init__(self, root: Path, aliases: list[str]):
        from hybrid.models import embedded_gguf_path

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.ready_url, self.ready_headers = self.url + "/models", {"Authorization": f"Bearer {KEY}"}
        gguf = str(embedded_gguf_path())
        config = {"host": "127.0.0.1", "port": self.port, "api_key": KEY,
                  "models": [{"model": gguf, "model_alias": a, "n_ctx": 2048, "n_threads": 1, "verbose": False}
                             for a in aliases]}
        cfg = root / "llamacpp.json"
        cfg.write_text(json.dumps(config))
        self._start([sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)], root / "llamacpp.log")


@pytest.fixture(scope="module")
def llamacpp(tmp_path_factory):
    """The base GGUF under two names: ``legal`` and ``legal-tuned`` (standing for a served adapter)."""
    s = LlamaCppServer(tmp_path_factory.mktemp("llamacpp"), ["legal", "legal-tuned"]).wait_ready()
    yield s
    s.stop()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("TEST_B_KEY", KEY)


def test_every_strategy_and_streaming_through_llama_cpp(llamacpp, tmp_path, key):
    from hybrid.generation import OpenAIGenerator
    from hybrid.strategies import STRATEGIES, strategy_names

    bot = assistant(remote_app(tmp_path, "remote", llamacpp.url))
    assert isinstance(bot.generator, OpenAIGenerator)
    assert bot.excluded() == {}  # llama.cpp serves the adapter's model name: tuned strategies stay
    for name in strategy_names():
        ans = bot.ask(QUESTION, strategy=name)
        assert ans.strategy == name and ans.text.strip(), name
        if getattr(STRATEGIES.get(name), "generates", True):
            assert ans.usage["completion_tokens"] > 0, name  # llama.cpp's own count
        print(f"{name}: {ans.text[:70]!r} usage={ans.usage}")
    s = bot.stream(QUESTION, strategy="rag")
    pieces = list(s)
    assert len(pieces) > 1 and s.answer is not None and s.answer.strategy == "rag"
    assert "".join(pieces).strip() and s.answer.text.strip()
    auto = bot.ask(QUESTION)
    assert auto.text.strip() and auto.decision is not None and auto.decision.excluded == {}


def test_an_adapter_llama_cpp_lacks_excludes_the_tuned_strategies(llamacpp, tmp_path, key):
    from core.errors import InputError

    bot = assistant(remote_app(tmp_path, "remote", llamacpp.url, adapter_model="legal-lora"))
    excluded = bot.excluded()
    assert set(excluded) == {"tuned", "tuned_rag"}
    assert "does not serve 'legal-lora', the model name of adapter 'remote' (it serves: legal, legal-tuned)" \
        in excluded["tuned"]
    with pytest.raises(InputError, match="strategy 'tuned' is not available"):
        bot.ask(QUESTION, strategy="tuned")
    assert bot.ask(QUESTION, strategy="few_shot").text.strip()


def test_a_wrong_model_name_and_a_stopped_llama_cpp_are_one_line_errors(tmp_path, key):
    """llama.cpp itself answers any model name with its default model: the check is ours (/v1/models)."""
    from core.errors import ModelError

    s = LlamaCppServer(tmp_path, ["legal"]).wait_ready()
    try:
        r = httpx.post(s.url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                       json={"model": "legal-7b", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200  # the server does not refuse it...
        bot = assistant(remote_app(tmp_path, "wrong", s.url, model="legal-7b", card=False))
        with pytest.raises(ModelError) as e:  # ...so the app does, before generating
            bot.ask(QUESTION, strategy="few_shot")
        assert str(e.value) == (f"the generation server at {s.url} has no model 'legal-7b' (it serves: legal); "
                                "set generation.model to one of them")
        bot = assistant(remote_app(tmp_path, "right", s.url, card=False))
        assert bot.ask(QUESTION, strategy="few_shot").text.strip()
    finally:
        s.stop()
    with pytest.raises(ModelError) as e:
        bot.ask(QUESTION, strategy="few_shot")
    assert str(e.value).startswith(f"the generation server at {s.url} is not reachable (connection refused)")
