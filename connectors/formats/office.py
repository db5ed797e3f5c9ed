"""Office documents: DOCX and PPTX through unstructured, each archive checked before it is inflated."""

from __future__ import annotations

import io
from typing import Any

from connectors.config import IngestConfig
from connectors.formats import Parsed, Part, _register
from connectors.formats._unstructured import _elements_text, _unstructured_offline
from core.errors import SkipError

# python-docx and python-pptx parse their XML with lxml and resolve_entities=False, so an
# external entity in a crafted file is never fetched or expanded.


def _zip_check(data: bytes, kind: str) -> None:
    import zipfile

    if not data.startswith(b"PK"):
        raise SkipError("corrupt", f"not a {kind} file (no ZIP header)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            # Zip bombs: refuse archives that declare a huge expansion before inflating anything.
            total = sum(i.file_size for i in z.infolist())
            if total > 200 * len(data) + 50 * 1024 * 1024:
                raise SkipError("too_large", f"{kind} expands to {total} bytes (zip bomb guard)")
            bad = z.testzip()  # streams each member; a lying size header still hits the deadline
    except zipfile.BadZipFile as e:
        raise SkipError("corrupt", f"broken {kind} archive: {e}") from None
    except SkipError:
        raise
    except Exception as e:  # noqa: BLE001 - zlib errors from damaged members
        raise SkipError("corrupt", f"broken {kind} archive: {type(e).__name__}: {e}") from None
    if bad is not None:
        raise SkipError("corrupt", f"broken {kind} archive: member {bad!r} fails its CRC check")


@_register((".docx",), "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
def parse_docx(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    _zip_check(data, "DOCX")
    _unstructured_offline()
    from unstructured.partition.docx import partition_docx

    try:
        elements = partition_docx(file=io.BytesIO(data))
    except SkipError:
        raise
    except Exception as e:  # noqa: BLE001 - python-docx raises many types on damaged files
        raise SkipError("corrupt", f"unreadable DOCX: {type(e).__name__}: {str(e)[:200]}") from None
    meta: dict[str, Any] = {}
    try:
        import docx

        props = docx.Document(io.BytesIO(data)).core_properties
        if props.title:
            meta["title"] = props.title
    except Exception:  # noqa: BLE001 - core properties are optional
        pass
    return Parsed([Part(_elements_text(elements))], meta=meta)


@_register((".pptx",), "application/vnd.openxmlformats-officedocument.presentationml.presentation")
def parse_pptx(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """One part per slide, ``page`` = slide number (1-based)."""
    _zip_check(data, "PPTX")
    _unstructured_offline()
    from unstructured.partition.pptx import partition_pptx

    try:
        elements = partition_pptx(file=io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - python-pptx raises many types on damaged files
        raise SkipError("corrupt", f"unreadable PPTX: {type(e).__name__}: {str(e)[:200]}") from None
    slides: dict[int, list[Any]] = {}
    for e in elements:
        slides.setdefault(int(getattr(e.metadata, "page_number", None) or 1), []).append(e)
    parts = [Part(_elements_text(els), {"page": n}) for n, els in sorted(slides.items())]
    return Parsed(parts)
