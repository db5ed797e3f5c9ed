"""A reader trained with unanswerable (SQuAD v2) questions learns its abstain threshold from them, and
extract then says the app's dont_know sentence for a clearly unanswerable question."""

from __future__ import annotations

import json
import random

import pytest

from hybrid.generation import ScriptedGenerator
from hybrid.pipeline import Assistant

pytestmark = pytest.mark.slow

NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jana", "Kofi", "Lena",
         "Mateo", "Nora", "Omar", "Petra", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Xena",
         "Yusuf", "Zora", "Anton", "Bea", "Cyril", "Dina", "Elio", "Fay", "Gil", "Hedy", "Ilan", "Juno"]
CITIES = ["Lisbon", "Oslo", "Lima", "Kyoto", "Accra", "Quito", "Perth", "Tunis", "Riga", "Hanoi", "Dakar", "Bern"]
JOBS = ["baker", "pilot", "nurse", "welder", "lawyer", "farmer", "painter", "chemist", "tailor", "plumber"]


def squad_v2(seed: int = 0) -> dict:
    rnd = random.Random(seed)
    data = []
    for i, name in enumerate(NAMES):
        city, job = rnd.choice(CITIES), rnd.choice(JOBS)
        ctx = f"{name} lives in {city}. {name} works as a {job}."
        qas = [{"id": f"{i}-city", "question": f"Where does {name} live?",
                "answers": [{"text": city, "answer_start": ctx.index(city)}]},
               {"id": f"{i}-job", "question": f"What is the job of {name}?",
                "answers": [{"text": job, "answer_start": ctx.index(job)}]},
               {"id": f"{i}-age", "question": f"How old is {name}?", "answers": [], "is_impossible": True}]
        data.append({"title": name, "paragraphs": [{"context": ctx, "qas": qas}]})
    return {"version": "v2.0", "data": data}


def test_threshold_is_learned_from_unanswerables_and_extract_abstains(tmp_path):
    from hybrid.reader.train import train_reader

    f = tmp_path / "v2.json"
    f.write_text(json.dumps(squad_v2()))
    res = train_reader([f], tmp_path / "reader", epochs=8, lr=3e-4, batch_size=16, max_length=48, stride=8,
                       eval_fraction=0.25, progress=False, bf16=False)
    card = res.card
    assert card["rows"]["unanswerable"] == len(NAMES)
    assert card["threshold_from"].startswith("eval split:") and "unanswerable" in card["threshold_from"]
    assert card["calibration"]["fitted"]
    assert card["eval_after"]["f1"] > card["eval_before"]["f1"]
    assert json.loads((tmp_path / "reader" / "reader_card.json").read_text())["threshold"] == card["threshold"]

    root = tmp_path / "app"
    root.mkdir()
    (root / "app.yaml").write_text(f"""\
name: people
system_prompt: "You are {{app_name}}."
knowledge_base:
  embedder: hash:256
rag:
  k: 1
  min_score: 0.0
reader:
  path: {tmp_path / 'reader'}
generation:
  model: scripted
voice:
  dont_know: "No idea, says my data."
""")
    from hybrid.app import load_app
    from indexes.embed import HashEmbedder

    from tests.core.fakes import MemoryRetriever

    emb = HashEmbedder(256)
    docs = [("Alice lives in Oslo. Alice works as a pilot.", {"source": "alice.md"}),
            ("Bruno lives in Lima. Bruno works as a nurse.", {"source": "bruno.md"})]
    bot = Assistant(load_app(root), generator=ScriptedGenerator(), embedder=emb,
                    knowledge_base=MemoryRetriever(docs, emb))
    assert bot.reader is not None and bot.reader.tuned
    yes = bot.ask("Where does Alice live?", strategy="extract")
    assert yes.text == "Oslo [1]", (yes.text, yes.confidence, card["threshold"])
    assert yes.citations[0].source == "alice.md" and yes.confidence >= card["threshold"]
    no = bot.ask("How old is Alice?", strategy="extract")
    assert no.text == "No idea, says my data.", (no.text, no.confidence, card["threshold"])
    assert no.citations == []
