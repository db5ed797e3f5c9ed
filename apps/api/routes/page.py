"""The chat page at / : a static shell with no data in it, so no key is needed to fetch it (the page
asks for the key and sends it with every call). Its assets are mounted at /static by ``create_app``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
