"""``hybrid ask --set generation.backend=openai ...``: the CLI answers through a (scripted loopback)
server, and a server that is down is one line on stderr with exit code 2."""

from __future__ import annotations

import contextlib
import io
import socket

from hybrid.cli import main
from tests.api.conftest import LEGAL_DOCS, LEGAL_EX, write_app
from tests.generation.openai_stub import StubServer


def ask(app_dir, base_url: str, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    args = ["ask", "How much notice must a landlord give?", "--app", str(app_dir), "--strategy", "rag",
            "--set", "generation.backend=openai", "--set", "generation.model=base",
            "--set", f"generation.openai.base_url={base_url}", "--set", "generation.openai.tokenizer=estimate",
            "--set", "generation.openai.retries=1", *extra]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_ask_answers_through_the_server_and_says_so_when_it_is_down(tmp_path):
    app = write_app(tmp_path, "legal", LEGAL_DOCS, LEGAL_EX)
    with StubServer(models=["base"]) as stub:
        code, out, err = ask(app, stub.url)
        assert code == 0, err
        assert out.startswith("Two months.") and "route: rag" in out and "tokens: 7 prompt + 3 completion" in out
        body = stub.chat_requests()[-1].body
        assert body["model"] == "base" and "two months notice" in body["messages"][-1]["content"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = ask(app, f"http://127.0.0.1:{port}/v1")
    assert code == 2 and out == ""
    assert err.strip() == (f"error: the generation server at http://127.0.0.1:{port}/v1 is not reachable (connection "
                           "refused) after 2 attempt(s); is it running? (generation.openai.base_url)")
