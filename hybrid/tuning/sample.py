"""A made-up product catalogue answered in one fixed house style: the sample set for demos and tests.

Every answer starts with ``HOUSE_PREFIX`` and ends with ``HOUSE_SIGNOFF``: an objective marker that a
base model never produces by itself and a tuned one should produce on products it has never seen::

    rows = catalogue_rows()                    # chat rows, one product per "source" document
    follows_house_style("KESTREL SAYS: ... Happy trails! ~Kestrel")   # True
"""

from __future__ import annotations

import random
import re

HOUSE_PREFIX = "KESTREL SAYS:"
HOUSE_SIGNOFF = "Happy trails! ~Kestrel"
SYSTEM_PROMPT = "You are the shop assistant of Kestrel Outfitters, an outdoor gear shop."

_KINDS = ["tent", "backpack", "sleeping bag", "headlamp", "stove", "water filter", "trekking pole",
          "rain jacket", "camp chair", "cooler"]
_NAMES = ["Aster", "Birch", "Cobalt", "Dune", "Ember", "Fjord", "Granite", "Heron", "Iris", "Juniper",
          "Kite", "Lark", "Moss", "Nimbus", "Orca", "Pine", "Quartz", "Ridge", "Sable", "Tundra",
          "Umber", "Vale", "Willow", "Yarrow", "Zephyr", "Alder", "Basalt", "Cedar", "Delta", "Elm"]
_MATERIALS = ["ripstop nylon", "recycled polyester", "aluminium", "titanium", "waxed canvas", "merino wool",
              "carbon fibre", "stainless steel"]
_COLOURS = ["forest green", "slate grey", "sunset orange", "glacier blue", "sand", "charcoal", "berry red"]


def products(n: int = 60, seed: int = 7) -> list[dict]:
    """``n`` deterministic made-up products with a price, weight, material, colours and warranty."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = _KINDS[i % len(_KINDS)]
        name = f"{_NAMES[i % len(_NAMES)]} {rng.choice(['Lite', 'Pro', 'Trail', 'Summit', 'Basecamp', 'X'])}"
        out.append({
            "id": f"KO-{100 + i}",
            "name": f"{name} {kind}",
            "price": rng.choice([19, 24, 35, 49, 59, 79, 89, 129, 149, 199, 249]),
            "weight_g": rng.randrange(80, 4000, 10),
            "material": rng.choice(_MATERIALS),
            "colours": rng.sample(_COLOURS, 2),
            "warranty_years": rng.choice([1, 2, 3, 5]),
        })
    return out


def _qa(p: dict) -> list[tuple[str, str]]:
    n = p["name"]
    return [
        (f"How much does the {n} cost?", f"The {n} costs {p['price']} euros."),
        (f"What is the {n} made of?", f"The {n} is made of {p['material']}."),
        (f"How heavy is the {n}?", f"The {n} weighs {p['weight_g']} grams."),
        (f"Which colours does the {n} come in?",
         f"The {n} comes in {p['colours'][0]} and {p['colours'][1]}."),
        (f"What warranty do I get with the {n}?",
         f"The {n} has a {p['warranty_years']}-year warranty."),
    ]


def house_answer(fact: str) -> str:
    return f"{HOUSE_PREFIX} {fact} {HOUSE_SIGNOFF}"


def catalogue_rows(n_products: int = 60, seed: int = 7) -> list[dict]:
    """Chat rows ``{"messages": [...], "source": product id}``: five questions per product."""
    rows = []
    for p in products(n_products, seed):
        for q, fact in _qa(p):
            rows.append({"messages": [{"role": "user", "content": q},
                                      {"role": "assistant", "content": house_answer(fact)}],
                         "source": p["id"]})
    return rows


def catalogue_documents(n_products: int = 60, seed: int = 7) -> list[dict]:
    """The same products as plain documents (``docs.jsonl`` rows) for the RAFT and style builders."""
    docs = []
    for p in products(n_products, seed):
        text = (f"# {p['name']}\n\nThe {p['name']} costs {p['price']} euros. It weighs {p['weight_g']} grams "
                f"and is made of {p['material']}. It comes in {p['colours'][0]} and {p['colours'][1]}. "
                f"Every {p['name']} has a {p['warranty_years']}-year warranty.")
        docs.append({"id": p["id"], "text": text, "metadata": {"title": p["name"], "source": p["id"]}})
    return docs


def follows_house_style(text: str) -> bool:
    """The objective style check: the fixed prefix first and the fixed sign-off last."""
    t = re.sub(r"\s+", " ", text).strip()
    return t.startswith(HOUSE_PREFIX) and t.endswith(HOUSE_SIGNOFF)
