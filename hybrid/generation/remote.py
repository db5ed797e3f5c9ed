"""HTTP to an OpenAI-compatible server, for the ``openai`` backend: one pooled ``httpx.Client``, a
deadline per call, retries with exponential backoff, server-sent events, and one-line errors.

    client = OpenAIClient("http://127.0.0.1:8000/v1", timeout=60, retries=2)
    client.models()                                   # [{"id": "legal", ...}, ...] from GET /models
    client.chat({"model": "legal", "messages": [...]})                  # the JSON body of the reply
    for event in client.chat_stream({"model": "legal", "messages": [...], "stream": True}):
        ...                                           # each ``data:`` event, parsed, until [DONE]

What is retried: a refused or timed-out connection, a 5xx and a 429 (its ``Retry-After`` honoured),
each ``retries`` more times, waiting ``backoff`` seconds and then twice as long each time. Never a
4xx other than 429: the same request would fail the same way. Nothing outlives the deadline: every
wait, connect and read is bounded by the time left, and a streamed reply that started is not retried
(its first tokens were already handed on).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterator

from core.errors import ModelError

log = logging.getLogger(__name__)

__all__ = ["OpenAIClient", "BackendError", "BackendUnreachable", "BackendDeadline", "BackendHTTPError"]


class BackendError(ModelError):
    """The generation server could not give an answer; the message is one line saying why."""


class BackendUnreachable(BackendError):
    """No connection could be made (server down, wrong host or port)."""


class BackendDeadline(BackendError):
    """The deadline passed before the server finished answering."""


class BackendHTTPError(BackendError):
    """The server answered with an error status (``status``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_message(raw: bytes | str | dict | None) -> str:
    """The server's own explanation from an error body (OpenAI ``{"error": {"message"}}``, FastAPI
    ``{"detail"}``, or plain text), cut to one short line."""
    data: Any = raw
    if isinstance(raw, (bytes, str)):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            data = json.loads(text)
        except ValueError:
            data = text
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            data = err.get("message") or err.get("detail") or err.get("msg") or json.dumps(err)[:200]
        elif "detail" in data:
            data = data["detail"]
        else:
            data = err
    line = " ".join(str(data or "").split())
    return line[:240] or "(no message)"


class OpenAIClient:
    """A pooled client for one server. Thread-safe: ``hybrid eval`` sends a batch's requests from
    several threads at once through the same pool."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0,
                 connect_timeout: float = 5.0, retries: int = 2, backoff: float = 0.5, max_connections: int = 8,
                 sleep: Callable[[float], None] = time.sleep):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        self.retries, self.backoff, self._sleep = int(retries), float(backoff), sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url + "/", headers=headers, timeout=self.timeout,
                                 limits=httpx.Limits(max_connections=max_connections,
                                                     max_keepalive_connections=max_connections))
        self.where = f"the generation server at {self.base_url}"

    def close(self) -> None:
        self.http.close()

    # -- requests ---------------------------------------------------------------------------------
    def deadline(self, seconds: float | None = None) -> float:
        return time.monotonic() + (self.timeout if seconds is None else seconds)

    def _deadline_error(self) -> BackendDeadline:
        return BackendDeadline(f"{self.where} did not answer within the {self.timeout:g}s deadline "
                               "(generation.openai.timeout)")

    def _retry(self, attempt: int, deadline: float, retry_after: str | None = None) -> bool:
        """Back off before attempt ``attempt + 1`` and say True; False (no wait) when no retry is left
        or the wait would pass the deadline: the caller then reports the error it has."""
        if attempt >= self.retries:
            return False
        pause = self.backoff * (2 ** attempt)
        if retry_after:
            try:
                pause = max(pause, float(retry_after))
            except ValueError:
                pass
        if pause >= deadline - time.monotonic():
            return False
        self._sleep(pause)
        return True

    def send(self, method: str, path: str, *, body: dict | None = None, deadline: float):
        """The response (headers read, body still streaming; the caller closes it) of a request that
        succeeded, after retries; a ``BackendError`` otherwise."""
        import httpx

        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._deadline_error()
            timeout = httpx.Timeout(left, connect=min(self.connect_timeout, left))
            try:
                request = self.http.build_request(method, path.lstrip("/"), json=body, timeout=timeout)
                response = self.http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if self._retry(attempt, deadline):
                    log.info("%s: %s, retried", self.where, type(e).__name__)
                    attempt += 1
                    continue
                why = "connection refused" if isinstance(e, httpx.ConnectError) else "connect timed out"
                raise BackendUnreachable(f"{self.where} is not reachable ({why}) after {attempt + 1} "
                                         "attempt(s); is it running? (generation.openai.base_url)") from None
            except httpx.TimeoutException:
                raise self._deadline_error() from None
            except httpx.TransportError as e:
                raise BackendUnreachable(f"{self.where} dropped the connection ({type(e).__name__}: "
                                         f"{error_message(str(e))})") from None
            status = response.status_code
            if status < 400:
                return response
            raw = self._read_error(response, deadline)
            if (status >= 500 or status == 429) and \
                    self._retry(attempt, deadline, response.headers.get("retry-after") if status == 429 else None):
                log.info("%s answered %d, retried", self.where, status)
                attempt += 1
                continue
            raise self._status_error(status, raw, attempt + 1, body)

    def _read_error(self, response, deadline: float) -> bytes:
        import httpx

        try:
            return self._read(response, deadline)
        except (httpx.HTTPError, BackendError):
            return b""
        finally:
            response.close()

    def _read(self, response, deadline: float) -> bytes:
        """The whole body, checking the deadline between chunks (a server may trickle)."""
        import httpx

        out = bytearray()
        try:
            for chunk in response.iter_bytes():
                out += chunk
                if time.monotonic() > deadline:
                    raise self._deadline_error()
        except httpx.TimeoutException:
            raise self._deadline_error() from None
        except httpx.TransportError as e:
            raise BackendUnreachable(f"{self.where} dropped the connection mid-answer ({type(e).__name__})") from None
        return bytes(out)

    def _status_error(self, status: int, raw: bytes, attempts: int, body: dict | None) -> BackendHTTPError:
        msg = error_message(raw)
        model = (body or {}).get("model")
        if status == 404 and model:
            served = self._served_names()
            if served is not None and model not in served:
                return BackendHTTPError(404, f"{self.where} has no model {model!r} (it serves: "
                                             f"{', '.join(served) or 'nothing'})")
        if status in (401, 403):
            return BackendHTTPError(status, f"{self.where} refused the key ({status}: {msg}); put the key in the "
                                            "environment variable named by generation.openai.api_key_env")
        if status == 429:
            return BackendHTTPError(429, f"{self.where} is busy (429 after {attempts} attempt(s)): {msg}")
        if status >= 500:
            return BackendHTTPError(status, f"{self.where} failed ({status} after {attempts} attempt(s)): {msg}")
        return BackendHTTPError(status, f"{self.where} rejected the request ({status}): {msg}")

    def _served_names(self) -> list[str] | None:
        try:
            return [m["id"] for m in self.models(deadline=self.deadline(min(self.timeout, 10.0)))]
        except (BackendError, KeyError, TypeError):
            return None

    # -- endpoints --------------------------------------------------------------------------------
    def get_json(self, path: str, *, deadline: float | None = None) -> Any:
        return self._json("GET", path, None, deadline or self.deadline(), f" for GET {path}")

    def _json(self, method: str, path: str, body: dict | None, deadline: float, what: str = "") -> Any:
        """One request whose reply must be JSON; ``what`` names the request in the error."""
        response = self.send(method, path, body=body, deadline=deadline)
        try:
            raw = self._read(response, deadline)
        finally:
            response.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise BackendError(f"{self.where} sent a reply that is not JSON{what}: {error_message(raw)}") from None

    def models(self, *, deadline: float | None = None) -> list[dict]:
        """The served models (``GET /models``): each a dict with at least ``id``."""
        data = self.get_json("models", deadline=deadline)
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
            raise BackendError(f"{self.where} sent a model list without the OpenAI shape ({{'data': [{{'id'}}]}})")
        return rows

    def chat(self, body: dict, *, deadline: float | None = None) -> dict:
        """``POST /chat/completions`` without streaming: the reply's JSON."""
        deadline = deadline or self.deadline()
        data = self._json("POST", "chat/completions", body, deadline)
        if not isinstance(data, dict) or not data.get("choices"):
            raise BackendError(f"{self.where} sent a completion without choices: {error_message(data)}")
        return data


    def chat_stream(self, body: dict, *, deadline: float | None = None) -> Iterator[dict]:
        """``POST /chat/completions`` with ``stream: true``: each event's JSON until ``[DONE]``. Closing
        the iterator closes the connection, which is how servers learn to stop generating."""
        import httpx

        deadline = deadline or self.deadline()
        response = self.send("POST", "chat/completions", body=body, deadline=deadline)
        if "json" in response.headers.get("content-type", ""):
            yield self._whole_reply(response, deadline)  # a server that ignored stream: true
            return
        done = False
        try:
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    raise self._deadline_error()
                if not line.startswith("data:"):
                    continue  # blank separators, "event:" names, ": keep-alive" comments
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise BackendError(f"{self.where} sent a stream event that is not JSON: {data[:120]!r}") from None
                if isinstance(event, dict) and "error" in event:
                    err = event["error"]
                    code = err.get("code") if isinstance(err, dict) else None
                    raise BackendHTTPError(code if isinstance(code, int) else 500,
                                           f"{self.where} failed mid-stream: {error_message(event)}")
                choices = event.get("choices") if isinstance(event, dict) else None
                done = done or any(isinstance(c, dict) and c.get("finish_reason") for c in choices or [])
                yield event
            if not done:
                raise BackendUnreachable(f"{self.where} ended the stream before the answer did (no finish_reason, "
                                         "no [DONE]): was it restarted?")
        except httpx.TimeoutException:
            raise self._deadline_error() from None
        except httpx.TransportError as e:
            raise BackendUnreachable(f"{self.where} dropped the stream ({type(e).__name__})") from None
        finally:
            response.close()

    def _whole_reply(self, response, deadline: float) -> dict:
        """A non-streamed completion, as the one stream event that carries all of it."""
        try:
            raw = self._read(response, deadline)
        finally:
            response.close()
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.where} answered a streamed request with JSON that is not a completion: "
                               f"{error_message(raw)}") from None
        return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": choice.get("finish_reason")}],
                "usage": data.get("usage")}
