"""The knowledge bases: raw search (/v1/search), document upload ingested in the background
(/v1/documents, progress at /v1/jobs/{id}), and the apps with their KB stats (/v1/apps)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from apps.api import schemas as S
from apps.api.errors import ApiError, errs
from apps.api.jobs import JobStore, safe_filename
from apps.api.routes.deps import AUTHED, Svc, clean_params
from apps.api.uploads import known_sources, refuse_taken_names

router = APIRouter()


@router.get("/v1/search", response_model=S.SearchOut, dependencies=AUTHED, tags=["knowledge base"],
            summary="raw knowledge-base search in one app",
            responses=errs(404, 503, 504))
async def search(svc: Svc,
                 app_name: str = Query(..., alias="app", min_length=1, max_length=100),
                 q: str = Query(..., min_length=1, max_length=S.HARD_MAX_QUESTION_CHARS, examples=["deposit cap"]),
                 k: int = Query(5, ge=1, le=S.HARD_MAX_K),
                 mode: str = Query("hybrid", pattern="^(dense|bm25|hybrid)$")):
    settings = svc.settings
    clean_params(app=app_name, q=q)
    if not q.strip():
        raise ApiError(422, "q is empty: search for something")
    if len(q) > settings.max_question_chars:
        raise ApiError(422, f"q is {len(q)} characters; the limit is {settings.max_question_chars}")
    if k > settings.max_k:
        raise ApiError(422, f"k must be <= {settings.max_k}, got {k}")
    svc.admit(app_name)
    loop = asyncio.get_running_loop()
    svc.in_flight += 1
    try:
        hits = await asyncio.wait_for(loop.run_in_executor(None, svc.backend.search, app_name, q, k, mode),
                                      timeout=settings.request_timeout)
    except asyncio.TimeoutError:
        raise ApiError(504, f"search took longer than {settings.request_timeout:g}s", "timeout") from None
    finally:
        svc.in_flight -= 1
    return {"app": app_name, "query": q, "hits": [
        {"rank": i, "score": float(h.score), "scores": {k2: float(v) for k2, v in h.scores.items()},
         "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id, "source": str(h.chunk.metadata.get("source", "")),
         "page": _page(h.chunk.metadata.get("page")), "text": h.chunk.text} for i, h in enumerate(hits)]}


@router.post("/v1/documents", response_model=S.JobOut, status_code=202, dependencies=AUTHED,
             tags=["knowledge base"],
             summary="upload files; they are ingested into the app's knowledge base in the background",
             description="A file whose stored name is already a document of the app (a corpus file or an "
                         "earlier upload) is refused with 409: rename it. Nothing of that upload is stored.",
             responses=errs(404, 409, 413, 503))
async def upload(svc: Svc,
                 app_name: str = Form(..., alias="app", min_length=1, max_length=100),
                 files: list[UploadFile] = File(..., description="documents (txt, md, html, pdf, docx, csv...)")):
    settings, backend = svc.settings, svc.backend
    clean_params(app=app_name)
    svc.admit(app_name)
    if not files:
        raise ApiError(422, "no files in the upload")
    if len(files) > settings.max_upload_files:
        raise ApiError(422, f"{len(files)} files in one upload; the limit is {settings.max_upload_files}")
    # Per app, per job: a directory we name; the client's file name only contributes safe characters.
    names: list[str] = []
    for i, f in enumerate(files):
        name = safe_filename(f.filename, i)
        while name in names:
            name = f"{i}-{name}"
        names.append(name)
    loop = asyncio.get_running_loop()
    in_kb = await loop.run_in_executor(None, known_sources, backend, app_name)
    refuse_taken_names(app_name, names, in_kb | svc.jobs.files_for(app_name))
    job_id = JobStore.new_id()
    dest = settings.uploads_for(app_name).resolve() / job_id
    dest.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    try:
        for f, name in zip(files, names):
            path = (dest / name).resolve()
            if path.parent != dest:  # belt and braces: never outside this job's directory
                raise ApiError(422, f"unusable file name {f.filename!r}")
            data = await f.read()
            await loop.run_in_executor(None, _write_atomic, path, data)
            saved.append(path)
        # Again, with no await before submit: a concurrent upload of the same name may have been
        # submitted while this one was being written.
        refuse_taken_names(app_name, names, svc.jobs.files_for(app_name))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    job = svc.jobs.submit(app_name, [p.name for p in saved],
                          lambda progress: backend.ingest_files(app_name, saved, progress), job_id=job_id)
    return JSONResponse(job.to_dict(), status_code=202)


@router.get("/v1/jobs/{job_id}", response_model=S.JobOut, dependencies=AUTHED, tags=["knowledge base"],
            summary="progress of an upload job", responses=errs(404))
async def job(job_id: str, svc: Svc):
    clean_params(job_id=job_id)
    j = svc.jobs.get(job_id)
    if j is None:
        raise ApiError(404, f"unknown job {job_id!r}", "not_found")
    return j.to_dict()


@router.get("/v1/apps", response_model=S.AppsOut, dependencies=AUTHED, tags=["apps"],
            summary="apps with their strategies, adapter cards and knowledge-base stats", responses=errs())
async def apps_list(svc: Svc):
    loop = asyncio.get_running_loop()
    return {"apps": await loop.run_in_executor(None, svc.backend.apps_info)}


def _write_atomic(path: Path, data: bytes) -> None:
    from core.io import atomic_write_bytes

    atomic_write_bytes(path, data)


def _page(v: Any) -> int | None:
    try:
        return int(v) if v is not None and v != "" else None
    except (TypeError, ValueError):
        return None
