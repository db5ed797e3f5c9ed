"""Uploads land in a per-app area under names we choose; each app's knowledge base is separate.

The real-backend tests run the product (``hybrid.pipeline.Assistant``, real ``KnowledgeBase`` with
FAISS + FTS5, connectors for uploads, the rules router) with the hash embedder and the scripted
generator, so they take seconds; the slow tests elsewhere use the real models.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apps.api.jobs import JobStore, safe_filename
from tests.api.conftest import AUTH


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd", "passwd"), ("..\\..\\windows\\boot.ini", "boot.ini"), ("/abs/path/x.md", "x.md"),
    ("....", "upload-0"), ("", "upload-0"), (None, "upload-0"), (".hidden", "hidden"),
    ("naïve résumé.txt", "naive_resume.txt"), ("a\x00b.txt", "a_b.txt"), ("x" * 300 + ".pdf", "x" * 76 + ".pdf"),
    ("con:stream.txt", "con_stream.txt"),
])
def test_safe_filename_never_names_a_path(name, expected):
    out = safe_filename(name)
    assert out == expected
    assert "/" not in out and "\\" not in out and not out.startswith(".")


def wait_job(client, job_id, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


def test_upload_goes_to_the_apps_area_under_a_safe_name(make_client, tmp_path):
    c = make_client(upload_dir=str(tmp_path / "up"))
    r = c.post("/v1/documents", data={"app": "shop"}, headers=AUTH, files=[
        ("files", ("../../../../tmp/evil.txt", b"Gift cards never expire.")),
        ("files", ("../../../../tmp/evil.txt", b"Second file with the same hostile name.")),
    ])
    assert r.status_code == 202
    job = wait_job(c, r.json()["id"])
    assert job["status"] == "done" and job["files"] == ["evil.txt", "1-evil.txt"]
    written = sorted(p.relative_to(tmp_path) for p in (tmp_path / "up").rglob("*") if p.is_file())
    assert written == [Path("up/shop") / job["id"] / "1-evil.txt", Path("up/shop") / job["id"] / "evil.txt"]
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_bytes() != b"Gift cards never expire."


def test_job_progress_and_unknown_job(client):
    assert client.get("/v1/jobs/job_nope", headers=AUTH).status_code == 404
    r = client.post("/v1/documents", data={"app": "legal"}, headers=AUTH,
                    files=[("files", ("bin.dat", b"\xff\xfe\x00bad")), ("files", ("ok.txt", b"fine text"))])
    job = wait_job(client, r.json()["id"])
    assert job["progress"] == 1.0 and job["report"]["documents"] == 1
    assert job["report"]["skipped"] == [{"file": "bin.dat", "reason": "not UTF-8 text"}]


def test_upload_without_files_is_422(client):
    r = client.post("/v1/documents", data={"app": "legal"}, headers=AUTH)
    assert r.status_code == 422 and "files" in r.json()["error"]["message"]


def test_job_store_reports_failures():
    store = JobStore()

    def boom(progress):
        progress("half way", 0.5)
        raise ValueError("disk on fire")

    job = store.wait(store.submit("a", ["f"], boom).id, 60)  # a bound for a hang, not a target
    assert job.status == "failed" and job.error == "ValueError: disk on fire" and job.progress == 0.5


# -- the real product ------------------------------------------------------------------------------

@pytest.fixture
def real_client(make_client, tiny_apps, tmp_path):
    from apps.api.backend import RealBackend

    c = make_client(RealBackend(tiny_apps), upload_dir=str(tmp_path / "up"))
    for _ in range(600):
        if c.get("/readyz").status_code == 200:
            return c
        time.sleep(0.05)
    raise AssertionError(c.get("/readyz").text)


def test_real_apps_are_listed_with_kb_stats(real_client):
    apps = {a["name"]: a for a in real_client.get("/v1/apps", headers=AUTH).json()["apps"]}
    assert set(apps) == {"legal", "shop"}
    assert apps["legal"]["knowledge_base"]["documents"] == 2 and "path" not in apps["legal"]["knowledge_base"]
    assert "rag" in apps["legal"]["strategies"] and "tuned" in apps["legal"]["excluded"]


def test_cross_app_query_never_returns_the_other_apps_chunks(real_client):
    # A shopping question asked of the legal app: only legal sources can come back.
    r = real_client.get("/v1/search", params={"app": "legal", "q": "delivery to Norway", "k": 10}, headers=AUTH)
    assert r.status_code == 200
    sources = {h["source"] for h in r.json()["hits"]}
    assert sources and sources <= {"tenancy-act.md", "notice.md"}
    a = real_client.post("/v1/ask", json={"app": "legal", "question": "How long does delivery to Norway take?",
                                          "strategy": "rag"}, headers=AUTH).json()
    assert {c["source"] for c in a["citations"]} <= {"tenancy-act.md", "notice.md"}
    assert "Norway takes five" not in a["answer"]
    b = real_client.post("/v1/ask", json={"app": "shop", "question": "How long does delivery to Norway take?",
                                          "strategy": "rag"}, headers=AUTH).json()
    assert "shipping.md" in {c["source"] for c in b["citations"]}


def test_upload_becomes_searchable_in_that_app_only(real_client):
    r = real_client.post("/v1/documents", data={"app": "shop"}, headers=AUTH,
                         files=[("files", ("gift-cards.md", b"# Gift cards\n\nFernhollow gift cards never expire "
                                                           b"and work in every store."))])
    assert r.status_code == 202
    job = wait_job(real_client, r.json()["id"], timeout=120)
    assert job["status"] == "done", job
    assert job["report"]["sync"]["added"] == 1
    hits = real_client.get("/v1/search", params={"app": "shop", "q": "gift cards expire"}, headers=AUTH).json()["hits"]
    assert hits[0]["source"] == "gift-cards.md" and "never expire" in hits[0]["text"]
    other = real_client.get("/v1/search", params={"app": "legal", "q": "gift cards expire"}, headers=AUTH).json()
    assert all(h["source"] != "gift-cards.md" for h in other["hits"])
    # the original documents are still there (upload adds, never replaces)
    docs = {a["name"]: a for a in real_client.get("/v1/apps", headers=AUTH).json()["apps"]}["shop"]
    assert docs["knowledge_base"]["documents"] == 3


def test_real_ask_and_stream_report_route_and_citations(real_client):
    body = {"app": "legal", "question": "What is the maximum deposit a landlord may take?", "k": 2}
    a = real_client.post("/v1/ask", json=body, headers=AUTH).json()
    assert a["strategy"] == "rag" and "retrieval" in a["decision"]["reason"]
    assert a["citations"] and a["citations"][0]["source"] in {"tenancy-act.md", "notice.md"}
    assert a["usage"]["prompt_tokens"] > 0 and a["timings"]["total"] > 0
    r = real_client.post("/v1/ask", json={**body, "stream": True, "max_new_tokens": 4}, headers=AUTH)
    events = [b for b in r.text.strip().split("\n\n")]
    assert events[-1].startswith("event: final") and all(e.startswith("event: token") for e in events[:-1])
    assert 1 <= len(events) - 1 <= 4  # max_new_tokens reached the generator
