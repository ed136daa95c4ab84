"""`copyscope serve`: banks of known images matched online over HTTP (FastAPI on uvicorn).

Routes validate, authorise and call one BankEngine (pipeline.bank_engine) that the process holds for its
life. Every route but /healthz and /readyz needs `Authorization: Bearer KEY` (401 without a valid key, 403
when its role lacks the right); /docs, /openapi.json and /review are static pages that hold no data (the
review page asks for a key and calls the API with it). Errors are `{"error": {"code", "message"}}`, 4xx
for anything a client sent.
"""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import sys
import threading
import time
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from copyscope.descriptors.errors import UserError
from copyscope.pipeline.bank_db import DatabaseUnavailable
from copyscope.pipeline.bank_engine import DEFAULT_MATCH_THRESHOLD, DEFAULT_REVIEW_THRESHOLD, BankEngine
from copyscope.pipeline.bank_store import ROLES, Actor, Conflict, InvalidChange, NotFound
from copyscope.pipeline.decode import DecodeError, decode_image
from copyscope.pipeline.reports.pair_drawing import draw_pair
from copyscope.jobs.review_page import REVIEW_PAGE

log = logging.getLogger(__name__)

MAX_BODY = 20 * 1024 * 1024
MAX_METADATA = 16 * 1024
MAX_METADATA_DEPTH = 32  # deeper JSON could not be encoded back (RecursionError) in every answer that holds it
BANK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CONTENT_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text holds no NUL character
_RANK = {role: rank for rank, role in enumerate(ROLES)}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ErrorBody(BaseModel):
    class Detail(BaseModel):
        code: str
        message: str

    error: Detail


# ---------------------------------------------------------------- request bodies
class _Strict(BaseModel):
    """A JSON body: JSON types only (no "true" for true, no false for 0), no field it does not name."""
    model_config = ConfigDict(extra="forbid", strict=True)


class _Thresholds(_Strict):
    @model_validator(mode="after")
    def _ordered(self):
        m, r = getattr(self, "match_threshold", None), getattr(self, "review_threshold", None)
        if m is not None and r is not None and r > m:
            raise ValueError("review_threshold must not exceed match_threshold")
        return self


class BankCreate(_Thresholds):
    name: str = Field(pattern=BANK_NAME, description="letters, digits, '_', '.', '-'; at most 64")
    description: str = Field("", max_length=2000, pattern=NO_NUL)
    match_threshold: float = Field(DEFAULT_MATCH_THRESHOLD, ge=0, le=1, allow_inf_nan=False,
                                   description="least score for decision 'match'")
    review_threshold: float = Field(DEFAULT_REVIEW_THRESHOLD, ge=0, le=1, allow_inf_nan=False,
                                    description="least score listed for review")


class BankPatch(_Thresholds):
    enabled: bool | None = None
    description: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    match_threshold: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    review_threshold: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)


class ItemPatch(_Strict):
    enabled: bool


class ReviewCreate(_Strict):
    content_id: str = Field(min_length=1, max_length=256)
    bank: str | None = Field(None, pattern=BANK_NAME, description="needed when two banks hold the content_id")
    verdict: Literal["confirmed", "rejected"]
    note: str = Field("", max_length=2000, pattern=NO_NUL)


# ---------------------------------------------------------------- middleware
class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 (from Content-Length, or while streaming)."""

    class TooLarge(StarletteHTTPException):
        """An HTTPException, so that FastAPI's body parsing lets it through (it turns any other error into 400)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _error(413, "payload_too_large", f"body over {self.limit} bytes")(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyLimit.TooLarge(413, f"body over {self.limit} bytes")  # answered by the app's handler
            return message

        await self.app(scope, counted, send)


class Metrics:
    """Prometheus metrics of one app: requests by route and status, latency by route, items per bank."""

    def __init__(self, engine: BankEngine):
        self.registry = CollectorRegistry()
        self.requests = Counter("copyscope_requests", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("copyscope_request_seconds", "HTTP request latency", ["route", "method"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10),
                                 registry=self.registry)
        class Items:
            def collect(self):
                family = GaugeMetricFamily("copyscope_bank_items", "items per bank", labels=["bank"])
                for bank, n in engine.store.items_per_bank().items():
                    family.add_metric([bank], n)
                yield family
                yield GaugeMetricFamily("copyscope_engine_items", "matchable items in memory",
                                        value=engine.items_held())

        self.registry.register(Items())

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


# ---------------------------------------------------------------- who asks
def _require(least: str):
    """A dependency: the Actor of the request's key; 401 without a valid key, 403 below role `least`."""
    def check(request: Request) -> Actor:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        store = request.app.state.engine.store
        actor = store.authenticate(secret.strip()) if scheme.lower() == "bearer" and secret.strip() else None
        if actor is None:
            raise ApiError(401, "unauthorized", "give a valid key: Authorization: Bearer KEY")
        if _RANK[actor.role] < _RANK[least]:
            raise ApiError(403, "forbidden", f"key {actor.name!r} has role {actor.role}; this needs {least}")
        return actor
    return check


Matcher = Annotated[Actor, Depends(_require("matcher"))]
Curator = Annotated[Actor, Depends(_require("curator"))]
Admin = Annotated[Actor, Depends(_require("admin"))]


def _no_nul_in_path(request: Request) -> None:
    """A path with a NUL names nothing stored (every name is validated on write): 404 before the database."""
    if "\x00" in request.scope["path"]:
        raise ApiError(404, "not_found", "no such resource")


# ---------------------------------------------------------------- the app
def create_app(engine: BankEngine, *, max_body: int = MAX_BODY, max_metadata: int = MAX_METADATA) -> FastAPI:
    """The HTTP API over `engine` (which the caller opens and closes)."""
    app = FastAPI(title="copyscope", version="1", summary="Match uploads against banks of known images: "
                  "edited copies found by SSCD, region search and local verification.",
                  dependencies=[Depends(_no_nul_in_path)],
                  responses={"4XX": {"model": ErrorBody, "description": "refused: what the client sent"}})
    app.state.engine = engine
    metrics = Metrics(engine)
    drawing_lock = threading.Lock()
    # Inside `measure`, whose task group would wrap TooLarge in an ExceptionGroup (which FastAPI makes a 400).
    app.add_middleware(BodyLimit, limit=max_body)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(getattr(route, "path", "unmatched"), request.method, response.status_code,
                        time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return _error(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:5]]
        return _error(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "payload_too_large"}
        headers = e.headers
        if e.status_code == 405:  # Starlette's Allow names the methods of the first route of the path only
            methods = {m for route in app.routes if route.matches(request.scope)[0] != Match.NONE
                       for m in getattr(route, "methods", None) or ()}
            headers = {"Allow": ", ".join(sorted(methods))}
        return _error(e.status_code, codes.get(e.status_code, "http_error"), str(e.detail), headers)

    @app.exception_handler(NotFound)
    async def not_found(_, e: NotFound):
        return _error(404, "not_found", str(e))

    @app.exception_handler(InvalidChange)
    async def invalid_change(_, e: InvalidChange):
        return _error(422, "invalid_request", str(e))

    @app.exception_handler(Conflict)
    async def conflict(_, e: Conflict):
        return _error(409, "conflict", str(e))

    @app.exception_handler(DecodeError)
    async def bad_image(_, e: DecodeError):
        return _error(422, "bad_image", f"image: {e.reason}")

    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(_, e: DatabaseUnavailable):
        return _error(503, "unavailable", str(e), {"Retry-After": "1"})

    @app.exception_handler(UserError)
    async def user_error(_, e: UserError):
        return _error(400, "bad_request", str(e))

    # ------------------------------------------------ health
    @app.get("/healthz", tags=["health"])
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz():
        try:
            ready = engine.in_step()
        except DatabaseUnavailable as e:
            return _error(503, "unavailable", str(e), {"Retry-After": "1"})
        body = {"ready": ready, "items": engine.items_held(), "change": engine.applied}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus(_: Matcher):
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------ banks
    @app.post("/v1/banks", status_code=201, tags=["banks"])
    def create_bank(body: BankCreate, actor: Curator):
        bank = engine.store.create_bank(actor, body.name, body.description, body.match_threshold,
                                        body.review_threshold)
        return bank.to_json(items=0)

    @app.get("/v1/banks", tags=["banks"])
    def list_banks(_: Curator):
        counts = engine.store.items_per_bank()
        return {"banks": [b.to_json(items=counts.get(b.name, 0)) for b in engine.store.banks()]}

    @app.get("/v1/banks/{bank}", tags=["banks"])
    def get_bank(bank: str, _: Curator):
        return engine.store.bank(bank).to_json(items=engine.store.items_per_bank().get(bank, 0))

    @app.patch("/v1/banks/{bank}", tags=["banks"])
    def patch_bank(bank: str, body: BankPatch, actor: Curator):
        changes = body.model_dump(exclude_none=True)
        updated = engine.write(engine.store.update_bank, actor, bank, changes)
        return updated.to_json(items=engine.store.items_per_bank().get(bank, 0))

    @app.delete("/v1/banks/{bank}", tags=["banks"])
    def delete_bank(bank: str, actor: Curator):
        return {"deleted": bank, "items": engine.write(engine.store.delete_bank, actor, bank)}

    # ------------------------------------------------ items
    @app.post("/v1/banks/{bank}/items", status_code=201, tags=["items"],
              responses={200: {"description": "this content_id holds this image already"},
                         409: {"description": "this content_id holds another image"}})
    def add_item(bank: str, actor: Curator, image: Annotated[UploadFile, File()],
                 content_id: Annotated[str, Form()], metadata: Annotated[str | None, Form()] = None):
        engine.store.bank(bank)  # 404 before reading the image
        item, created = engine.add_item(actor, bank, _content_id(content_id), _metadata(metadata, max_metadata),
                                        _read(image))
        return JSONResponse(item.to_json(), status_code=201 if created else 200)

    @app.get("/v1/banks/{bank}/items/{content_id}", tags=["items"])
    def get_item(bank: str, content_id: str, _: Curator):
        return engine.store.item(bank, content_id).to_json()

    @app.patch("/v1/banks/{bank}/items/{content_id}", tags=["items"])
    def patch_item(bank: str, content_id: str, body: ItemPatch, actor: Curator):
        return engine.write(engine.store.update_item, actor, bank, content_id, body.enabled).to_json()

    @app.delete("/v1/banks/{bank}/items/{content_id}", tags=["items"])
    def delete_item(bank: str, content_id: str, actor: Curator):
        engine.write(engine.store.delete_item, actor, bank, content_id)
        return {"deleted": content_id, "bank": bank}

    # ------------------------------------------------ matching
    @app.post("/v1/match", tags=["match"])
    def match(actor: Matcher, image: Annotated[UploadFile, File()], banks: Annotated[str | None, Form()] = None,
              external_id: Annotated[str | None, Form(max_length=256, pattern=NO_NUL)] = None):
        names = None
        if banks is not None:
            names = [b.strip() for b in banks.split(",") if b.strip()]
            if not names or not all(re.match(BANK_NAME, b) for b in names):
                raise ApiError(422, "invalid_request", "banks: comma-separated bank names")
        record = engine.match(actor, _read(image), names, external_id)
        return _public(record)

    @app.get("/v1/matches", tags=["match"])
    def list_matches(actor: Matcher, decision: Literal["match", "review"] | None = None,
                     unreviewed: bool = False, limit: Annotated[int, Query(ge=1, le=200)] = 50):
        own = actor.name if actor.role == "matcher" else None
        return {"matches": [_public(r) for r in engine.store.recent_matches(limit, decision, unreviewed, own)]}

    def _readable(match_id: str, actor: Actor) -> dict:
        """A match record this actor may read (a matcher: only its own; 404 for others')."""
        record = engine.store.match_record(match_id)
        if actor.role == "matcher" and record["key"] != actor.name:
            raise ApiError(404, "not_found", f"no match {match_id!r}")
        return record

    @app.get("/v1/matches/{match_id}", tags=["match"])
    def get_match(match_id: str, actor: Matcher):
        return _public(_readable(match_id, actor))

    @app.post("/v1/matches/{match_id}/reviews", status_code=201, tags=["match"])
    def review(match_id: str, body: ReviewCreate, actor: Curator):
        record = engine.store.match_record(match_id)
        hits = [m for m in record["matches"] if m["content_id"] == body.content_id
                and (body.bank is None or m["bank"] == body.bank)]
        if not hits:
            raise ApiError(404, "not_found", f"match {match_id} has no result {body.content_id!r}"
                           + (f" in bank {body.bank!r}" if body.bank else ""))
        if len({m["bank"] for m in hits}) > 1:
            raise ApiError(422, "invalid_request", f"{body.content_id!r} matched in several banks: give bank")
        return _public(engine.store.add_review(actor, match_id, hits[0]["bank"], body.content_id, body.verdict,
                                               body.note))

    @app.get("/v1/matches/{match_id}/pairs/{rank}.png", tags=["match"], response_class=Response)
    def pair_png(match_id: str, rank: int, actor: Curator):
        """The upload and its rank-th result (0: best) drawn side by side with their verified inliers."""
        record = engine.store.match_record(match_id)
        if not 0 <= rank < len(record["matches"]) or record["image_sha256"] is None:
            raise ApiError(404, "not_found", f"match {match_id} has no result {rank}")
        hit = record["matches"][rank]
        try:
            reference = engine.store.image(hit["sha256"])
        except NotFound:
            raise ApiError(404, "not_found", "the matched item's image is gone (deleted since)") from None
        query = engine.store.image(record["image_sha256"])
        with drawing_lock:
            png = _drawing(engine, query, reference, hit["evidence"].get("look_box"))
        return Response(png, media_type="image/png")

    # ------------------------------------------------ admin
    @app.get("/v1/audit", tags=["admin"])
    def audit(_: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before: Annotated[int | None, Query(ge=1, le=2 ** 63 - 1)] = None):
        return {"entries": engine.store.audit_log(limit, before)}

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page():
        return HTMLResponse(REVIEW_PAGE)

    return app


def _read(upload: UploadFile) -> bytes:
    data = upload.file.read()
    if not data:
        raise DecodeError("empty file")
    return data


def _content_id(value: str) -> str:
    if not _CONTENT_ID.match(value):
        raise ApiError(422, "invalid_request", "content_id: 1 to 256 characters, no control characters")
    return value


def _metadata(text: str | None, limit: int) -> dict:
    if text is None or not text.strip():
        return {}
    if len(text.encode("utf-8")) > limit:
        raise ApiError(413, "payload_too_large", f"metadata over {limit} bytes")
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as e:
        raise ApiError(422, "invalid_request", f"metadata is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_request", "metadata must be a JSON object")
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ApiError(422, "invalid_request", f"metadata nests deeper than {MAX_METADATA_DEPTH}")
    return value


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def _depth(value) -> int:
    """How deep objects and arrays nest in a parsed JSON value (level by level: no recursion)."""
    depth, level = 0, [value]
    while level := [child for x in level if isinstance(x, (dict, list))
                    for child in (x.values() if isinstance(x, dict) else x)]:
        depth += 1
    return depth


def _public(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "image_sha256"}


def _drawing(engine: BankEngine, query: bytes, reference: bytes, look_box: list[float] | None) -> bytes:
    """The pair drawn with the inliers and regions the match found (look_box: its second look's) -> PNG bytes."""
    from PIL import Image

    canvas = draw_pair(decode_image(query), decode_image(reference), engine.verification(query, reference, look_box))
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, format="PNG")
    return out.getvalue()


def serve(data: str, db: str | None, host: str, port: int, model: str = "sscd", log_level: str = "info",
          region_model: str | None = None) -> int:
    """Open the engine, serve until interrupted, close it. model, region_model: those of a new database."""
    import uvicorn

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = BankEngine.open(data, db, model=model, region_model=region_model)
    engine.start_polling()
    # uvicorn drains requests on SIGTERM, then re-raises it to the handler found at start: exit cleanly,
    # so that the engine below is closed (its index cache saved, its connections closed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level, access_log=False)
    finally:
        engine.close()
    return 0
