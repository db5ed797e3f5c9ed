"""PDF: text per page from PDFium (pypdfium2), the owner's extract permission respected; the optional
hi-res path goes through unstructured's layout models."""

from __future__ import annotations

import io
from typing import Any

from connectors.config import IngestConfig
from connectors.formats import Parsed, Part, _register
from connectors.formats._unstructured import _elements_text, _unstructured_offline
from core.errors import SkipError

# PDF permission bit 5 (value 16): "copy or otherwise extract text and graphics".
_PDF_EXTRACT_BIT = 1 << 4


def _pdf_permissions(data: bytes) -> tuple[bool, int | None]:
    """(encrypted, P flags) read from the trailer with pypdf (no decryption needed)."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if not reader.is_encrypted:
            return False, None
        enc = reader.trailer["/Encrypt"].get_object()
        return True, int(enc.get("/P", -1))
    except Exception:  # noqa: BLE001 - pdfium gives the better error below
        return False, None


@_register((".pdf",), "application/pdf")
def parse_pdf(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """One part per page (``page`` is 1-based), text from PDFium via pypdfium2: offline, no torch.

    Layout-aware hi-res parsing (tables, OCR) is the optional extra ``hybrid[pdf-hires]``.
    """
    import pypdfium2 as pdfium

    if not data.lstrip()[:5] == b"%PDF-":
        raise SkipError("corrupt", "not a PDF (no %PDF- header)")
    encrypted, perms = _pdf_permissions(data)
    if encrypted and cfg.pdf_respect_permissions and perms is not None and not perms & _PDF_EXTRACT_BIT:
        raise SkipError(
            "copy_protected",
            "the PDF's owner forbids text extraction (set pdf_respect_permissions=false to override)",
        )
    if cfg.pdf_strategy == "hi_res":
        return _parse_pdf_hires(data)
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        msg = str(e)
        if "password" in msg.lower():
            raise SkipError("encrypted", "PDF is password-protected") from None
        raise SkipError("corrupt", f"unreadable PDF: {msg}") from None
    meta: dict[str, Any] = {"pages": len(doc)}
    try:
        title = (doc.get_metadata_dict().get("Title") or "").strip()
        if title:
            meta["title"] = title
    except Exception:  # noqa: BLE001 - metadata is optional
        pass
    parts = []
    try:
        for i in range(len(doc)):
            page = doc[i]
            textpage = page.get_textpage()
            text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
            textpage.close()
            page.close()
            parts.append(Part(text, {"page": i + 1}))
    except pdfium.PdfiumError as e:
        raise SkipError("corrupt", f"unreadable PDF page {len(parts) + 1}: {e}") from None
    finally:
        doc.close()
    return Parsed(parts, meta=meta)


def _parse_pdf_hires(data: bytes) -> Parsed:
    """unstructured's layout-model path (tables, reading order, OCR), one part per page."""
    try:
        from unstructured.partition.pdf import partition_pdf
    except ImportError:
        raise SkipError(
            "missing_extra", "pdf_strategy=hi_res needs the optional extra: pip install 'hybrid[pdf-hires]'"
        ) from None
    _unstructured_offline()
    try:
        elements = partition_pdf(file=io.BytesIO(data), strategy="hi_res")
    except Exception as e:  # noqa: BLE001 - layout models raise many types on damaged files
        raise SkipError("corrupt", f"unreadable PDF (hi_res): {type(e).__name__}: {str(e)[:200]}") from None
    pages: dict[int, list[Any]] = {}
    for e in elements:
        pages.setdefault(int(getattr(e.metadata, "page_number", None) or 1), []).append(e)
    return Parsed([Part(_elements_text(els), {"page": n}) for n, els in sorted(pages.items())])
