"""/v1/ask takes ``filters`` to scope retrieval to a document or source (as ``hybrid search --filter``)."""

from tests.api.conftest import AUTH


def test_filters_scope_the_sources(client):
    body = {"app": "legal", "question": "deposit notice landlord months", "strategy": "rag"}
    both = client.post("/v1/ask", json=body, headers=AUTH).json()
    assert {c["source"] for c in both["citations"]} == {"legal-doc0.txt", "legal-doc1.txt"}
    one = client.post("/v1/ask", json={**body, "filters": {"source": "legal-doc1.txt"}}, headers=AUTH)
    assert one.status_code == 200, one.text
    assert {c["source"] for c in one.json()["citations"]} == {"legal-doc1.txt"}


def test_malformed_filters_are_a_422(client):
    r = client.post("/v1/ask", json={"app": "legal", "question": "x?", "filters": {"source": [["nested"]]}},
                    headers=AUTH)
    assert r.status_code == 422


def test_the_assistant_backend_passes_filters_to_the_pipeline(monkeypatch):
    import threading

    from apps.api.backend import AskRequest, RealBackend

    seen = {}

    class Stub:
        app = None

        def stream(self, question, history, strategy, *, filters=None):
            seen["filters"] = filters
            return Streamed()

    class Streamed:
        answer = None

        def __iter__(self):
            return iter(())

    b = RealBackend.__new__(RealBackend)
    monkeypatch.setattr(RealBackend, "ready", lambda self: True)
    monkeypatch.setattr(RealBackend, "_for_request", lambda self, req: Stub())
    list(b.ask_stream(AskRequest("a", "q?", filters={"source": "p.txt"}), threading.Event()))
    assert seen["filters"] == {"source": "p.txt"}
