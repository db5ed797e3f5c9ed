"""A generation's SQLite file is flushed (through core.io.fsync) before it is renamed into place."""

from __future__ import annotations

import indexes.store as store
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase


def _record(monkeypatch) -> list[tuple[str, bool]]:
    flushed: list[tuple[str, bool]] = []
    real = store.fsync

    def spy(target):
        flushed.append((str(target), store.Path(target).exists()))
        real(target)

    monkeypatch.setattr(store, "fsync", spy)
    return flushed


def test_sync_and_rebuild_flush_the_sqlite_file_before_renaming_it(tmp_path, cfg, docs, monkeypatch):
    path = tmp_path / "kb"
    flushed = _record(monkeypatch)
    with KnowledgeBase.create(path, cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs)
    # publish: the temp file, while it still exists under its temp name
    assert any(name.endswith(".tmp") and ".sqlite." in name and existed for name, existed in flushed)
    flushed.clear()
    KnowledgeBase.rebuild(path, embedder=HashEmbedder())[0].close()
    # install_generation: the rebuilt generation's file in the side directory, before it moves over
    rebuilt = [name for name, existed in flushed if existed and ".rebuild" in name and name.endswith(".sqlite")]
    assert rebuilt
