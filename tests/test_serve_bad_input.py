"""Bad input never breaks `copyscope serve`: every refusal is a 4xx with the JSON error and changes nothing.

One engine on a temporary SQLite database serves the module: a bank "known" of two items and one recorded
match. `refused` sends a request that must fail and checks the answer's status and shape, and that no table
(audit log included) changed; upload tests also check that the bank and a good match are as before.
"""

import io
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from copyscope.jobs.serve import MAX_BODY, MAX_METADATA, MAX_METADATA_DEPTH, create_app
from copyscope.pipeline.bank_engine import BankEngine
from copyscope.pipeline.bank_store import Actor
from tests.badfiles import make_bad_corpus

UNDECODABLE = ("truncated.jpg", "corrupt.png", "empty.jpg", "text.png", "bomb.png")  # and broken_link.jpg: no bytes
TABLES = ("banks", "items", "images", "changes", "api_keys", "match_records", "reviews", "audit")
UNKNOWN_MATCH = "0" * 32


def jpeg(pixels) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    engine = BankEngine.open(tmp_path_factory.mktemp("serve") / "data")
    cli = Actor("cli", "admin")
    keys = {role: engine.store.create_key(cli, role, role) for role in ("admin", "curator", "matcher")}
    keys["other"] = engine.store.create_key(cli, "other", "matcher")
    keys["revoked"] = engine.store.create_key(cli, "revoked", "admin")
    engine.store.revoke_key(cli, "revoked")
    s = SimpleNamespace(engine=engine, client=TestClient(create_app(engine)), h={r: bearer(k) for r, k in keys.items()},
                        good=jpeg(data.astronaut()[40:440, 60:460]))  # an edited copy of item "astronaut"
    assert s.client.post("/v1/banks", json={"name": "known"}, headers=s.h["curator"]).status_code == 201
    for name in ("astronaut", "coffee"):
        r = s.client.post("/v1/banks/known/items", headers=s.h["curator"], data={"content_id": name},
                          files={"image": (f"{name}.jpg", jpeg(getattr(data, name)()))})
        assert r.status_code == 201, r.text
    s.baseline = good_match(s)
    assert [(m["content_id"], m["decision"]) for m in s.baseline["matches"]][:1] == [("astronaut", "match")]
    yield s
    engine.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, make_bad_corpus(folder)


def good_match(s) -> dict:
    r = s.client.post("/v1/match", headers=s.h["matcher"], data={"banks": "known"},
                      files={"image": ("query.jpg", s.good)})
    assert r.status_code == 200, r.text
    return r.json()


def state(engine) -> dict:
    """Rows per table, and the newest audit entry."""
    with engine.store.db.transaction() as tx:
        counts = {t: tx.one(f"SELECT COUNT(*) FROM {t}")[0] for t in TABLES}
    return counts | {"last_audit": engine.store.audit_log(1)}


def refused(s, status: int, code: str, method: str, url: str, client=None, **request) -> str:
    """Send a request that must be refused with `status` and error `code` -> its message; nothing changed."""
    before = state(s.engine)
    r = (client or s.client).request(method, url, **request)
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"], body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert state(s.engine) == before
    return body["error"]["message"]


def upload(s, route: str, payload: bytes, **form) -> dict:
    """The request of an upload route: add to "known" (curator) or match (matcher)."""
    if route == "items":
        return dict(method="POST", url="/v1/banks/known/items", headers=s.h["curator"],
                    data={"content_id": "upload"} | form, files={"image": ("upload.jpg", payload)})
    return dict(method="POST", url="/v1/match", headers=s.h["matcher"], data=form,
                files={"image": ("upload.jpg", payload)})


ROUTES = ("items", "match")


def test_corpus_is_covered(corpus):
    _, should_decode = corpus
    assert {name for name, ok in should_decode.items() if not ok} == set(UNDECODABLE) | {"broken_link.jpg"}


# ---------------------------------------------------------------- files that do not decode
@pytest.mark.parametrize("name", UNDECODABLE)
@pytest.mark.parametrize("route", ROUTES)
def test_undecodable_upload_is_refused_and_changes_nothing(svc, corpus, route, name):
    folder, _ = corpus
    message = refused(svc, 422, "bad_image", **upload(svc, route, (folder / name).read_bytes()))
    assert message.startswith("image: ")
    bank = svc.client.get("/v1/banks/known", headers=svc.h["curator"]).json()
    assert bank["items"] == 2 and svc.engine.items_held() == 2
    for content_id in ("astronaut", "coffee"):
        assert svc.client.get(f"/v1/banks/known/items/{content_id}", headers=svc.h["curator"]).status_code == 200
    again = good_match(svc)
    assert again["matches"] == svc.baseline["matches"] and again["match_id"] != svc.baseline["match_id"]


# ---------------------------------------------------------------- body size
@pytest.mark.parametrize("route", ROUTES)
def test_body_over_limit_is_413(svc, route):
    small = TestClient(create_app(svc.engine, max_body=4096))
    assert "4096" in refused(svc, 413, "payload_too_large", client=small, **upload(svc, route, bytes(5000)))


def test_chunked_body_over_limit_is_413(svc):
    """No Content-Length: counted while read (a regression: FastAPI's form parser made it a 400)."""
    small = TestClient(create_app(svc.engine, max_body=4096))
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'.encode()
            + bytes(5000) + f"\r\n--{boundary}--\r\n".encode())
    headers = svc.h["matcher"] | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    refused(svc, 413, "payload_too_large", "POST", "/v1/match", client=small, headers=headers, content=iter([body]))
    refused(svc, 413, "payload_too_large", "POST", "/v1/banks", client=small, content=iter([b" " * 5000 + b"{}"]),
            headers=svc.h["curator"] | {"Content-Type": "application/json"})


def test_declared_body_over_20_mb_is_refused_unread(svc):
    reads = []
    app = create_app(svc.engine)

    async def counting(scope, receive, send):
        async def counted():
            reads.append(1)
            return await receive()
        await app(scope, counted, send)

    client = TestClient(counting)
    big = bytes(21 * 1024 * 1024)
    assert len(big) > MAX_BODY
    for route in ROUTES:
        refused(svc, 413, "payload_too_large", client=client, **upload(svc, route, big))
    assert reads == []


# ---------------------------------------------------------------- multipart fields
@pytest.mark.parametrize("route", ROUTES)
def test_missing_or_misnamed_image_is_422(svc, route):
    request = upload(svc, route, svc.good)
    del request["files"]
    assert "image" in refused(svc, 422, "invalid_request", **request)
    request["files"] = {"file": ("x.jpg", svc.good)}
    assert "image" in refused(svc, 422, "invalid_request", **request)
    request["files"], request["data"] = None, request["data"] | {"image": "not a file"}
    assert "image" in refused(svc, 422, "invalid_request", **request)


@pytest.mark.parametrize("content_id", [None, "", "x" * 257, "a\nb", "a\x00b", "tab\there", "del\x7f"])
def test_bad_content_id_is_422(svc, content_id):
    request = upload(svc, "items", svc.good)
    request["data"] = {} if content_id is None else {"content_id": content_id}
    assert "content_id" in refused(svc, 422, "invalid_request", **request)


@pytest.mark.parametrize("metadata", [
    "{", "{'single': 'quotes'}", "[1, 2]", "3", '"text"', "null", "true",
    '{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}',  # regression: stored, then every answer holding it was a 500
    '{"x": ' + "[" * 5000 + "]" * 5000 + "}",  # regression: RecursionError, a 500
    '{"x": ' + "[" * (MAX_METADATA_DEPTH + 1) + "]" * (MAX_METADATA_DEPTH + 1) + "}",
    '{"x": ' + "[" * 970 + "]" * 970 + "}",  # regression: stored; every match against it was a 500 after
])
def test_bad_metadata_is_422(svc, metadata):
    assert "metadata" in refused(svc, 422, "invalid_request", **upload(svc, "items", svc.good, metadata=metadata))


def test_metadata_over_16_kb_is_413(svc):
    metadata = json.dumps({"x": "y" * MAX_METADATA})
    assert "metadata" in refused(svc, 413, "payload_too_large", **upload(svc, "items", svc.good, metadata=metadata))


def test_metadata_nested_to_the_limit_is_kept_and_matched(svc):
    nested = '{"x": ' + "[" * MAX_METADATA_DEPTH + "]" * MAX_METADATA_DEPTH + "}"
    c, h = svc.client, svc.h["curator"]
    assert c.post("/v1/banks", json={"name": "deep"}, headers=h).status_code == 201
    try:
        r = c.post("/v1/banks/deep/items", headers=h, data={"content_id": "nested", "metadata": nested},
                   files={"image": ("a.jpg", jpeg(data.astronaut()))})
        assert r.status_code == 201, r.text
        r = c.post("/v1/match", headers=svc.h["matcher"], data={"banks": "deep"}, files={"image": ("q.jpg", svc.good)})
        assert r.status_code == 200 and r.json()["matches"][0]["metadata"] == json.loads(nested)
    finally:
        assert c.delete("/v1/banks/deep", headers=h).status_code == 200


@pytest.mark.parametrize("banks", [" , ", "a b", "-x", "known,bad name"])
def test_bad_banks_field_is_422(svc, banks):
    assert "banks" in refused(svc, 422, "invalid_request", **upload(svc, "match", svc.good, banks=banks))


@pytest.mark.parametrize("external_id", ["x" * 257, "nul\x00"])
def test_bad_external_id_is_422(svc, external_id):
    refused(svc, 422, "invalid_request", **upload(svc, "match", svc.good, external_id=external_id))


# ---------------------------------------------------------------- JSON bodies
JSON_ROUTES = [("POST", "/v1/banks"), ("PATCH", "/v1/banks/known"), ("PATCH", "/v1/banks/known/items/coffee"),
               ("POST", "/v1/matches/{match}/reviews")]


@pytest.mark.parametrize("method,url", JSON_ROUTES)
@pytest.mark.parametrize("body", ["", "{", '{"name": "x",}', "[]", "null", '"text"', "{'name': 'x'}"])
def test_malformed_json_body_is_422(svc, method, url, body):
    refused(svc, 422, "invalid_request", method, url.format(match=svc.baseline["match_id"]), content=body,
            headers=svc.h["curator"] | {"Content-Type": "application/json"})


@pytest.mark.parametrize("method,url", JSON_ROUTES)
def test_json_too_deep_to_parse_is_400(svc, method, url):
    refused(svc, 400, "bad_request", method, url.format(match=svc.baseline["match_id"]),
            content="[" * 5000 + "]" * 5000, headers=svc.h["curator"] | {"Content-Type": "application/json"})


@pytest.mark.parametrize("method,url,body", [
    ("POST", "/v1/banks", {"name": 5}),
    ("POST", "/v1/banks", {"name": "x", "description": ["a"]}),
    ("POST", "/v1/banks", {"name": "x", "description": "nul\x00"}),
    ("POST", "/v1/banks", {"name": "x", "description": "d" * 2001}),
    ("POST", "/v1/banks", {"name": "bad name"}),
    ("POST", "/v1/banks", {"name": "x" * 65}),
    ("POST", "/v1/banks", {"name": "x", "colour": "red"}),
    ("PATCH", "/v1/banks/known", {"enabled": "maybe"}),
    ("PATCH", "/v1/banks/known", {"enabled": "false"}),  # regression: JSON bodies took "false" and 0 for false
    ("PATCH", "/v1/banks/known/items/coffee", {"enabled": 0}),
    ("PATCH", "/v1/banks/known", {"items": 3}),
    ("PATCH", "/v1/banks/known/items/coffee", {}),
    ("PATCH", "/v1/banks/known/items/coffee", {"enabled": None}),
    ("PATCH", "/v1/banks/known/items/coffee", {"enabled": True, "content_id": "other"}),
    ("POST", "/v1/matches/{match}/reviews", {"content_id": "astronaut", "verdict": "maybe"}),
    ("POST", "/v1/matches/{match}/reviews", {"content_id": "astronaut", "verdict": "confirmed", "score": 1}),
    ("POST", "/v1/matches/{match}/reviews", {"content_id": "", "verdict": "confirmed"}),
    ("POST", "/v1/matches/{match}/reviews", {"content_id": "astronaut", "verdict": "confirmed", "note": "\x00"}),
])
def test_wrong_types_and_unknown_fields_are_422(svc, method, url, body):
    refused(svc, 422, "invalid_request", method, url.format(match=svc.baseline["match_id"]), json=body,
            headers=svc.h["curator"])


BAD_THRESHOLDS = [{"match_threshold": -0.1}, {"match_threshold": 1.01}, {"review_threshold": -1},
                  {"match_threshold": "high"}, {"review_threshold": "NaN"}, {"match_threshold": [0.5]},
                  {"match_threshold": "0.95"}, {"review_threshold": False},  # regression: taken as 0.95 and 0
                  {"match_threshold": 0.4, "review_threshold": 0.6}]


@pytest.mark.parametrize("thresholds", BAD_THRESHOLDS)
@pytest.mark.parametrize("method,url,base", [("POST", "/v1/banks", {"name": "fresh"}),
                                             ("PATCH", "/v1/banks/known", {})])
def test_bad_thresholds_are_422(svc, thresholds, method, url, base):
    refused(svc, 422, "invalid_request", method, url, json=base | thresholds, headers=svc.h["curator"])


@pytest.mark.parametrize("method,url", [("POST", "/v1/banks"), ("PATCH", "/v1/banks/known")])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_thresholds_are_422(svc, method, url, literal):
    body = ('{"name": "fresh", ' if method == "POST" else "{") + f'"match_threshold": {literal}}}'
    refused(svc, 422, "invalid_request", method, url, content=body,
            headers=svc.h["curator"] | {"Content-Type": "application/json"})


@pytest.mark.parametrize("change", [{"review_threshold": 0.95}, {"match_threshold": 0.3}])
def test_patch_cannot_put_review_above_the_stored_match_threshold(svc, change):
    assert "review_threshold" in refused(svc, 422, "invalid_request", "PATCH", "/v1/banks/known", json=change,
                                         headers=svc.h["curator"])


@pytest.mark.parametrize("url", ["/v1/matches?limit=0", "/v1/matches?limit=201", "/v1/matches?limit=x",
                                 "/v1/matches?decision=maybe", "/v1/matches?unreviewed=perhaps",
                                 "/v1/audit?limit=0", "/v1/audit?limit=1001", "/v1/audit?before=x",
                                 f"/v1/audit?before={2 ** 70}",  # regression: an SQLite OverflowError, a 500
                                 "/v1/matches/{match}/pairs/x.png"])
def test_bad_query_parameters_are_422(svc, url):
    refused(svc, 422, "invalid_request", "GET", url.format(match=svc.baseline["match_id"]), headers=svc.h["admin"])


# ---------------------------------------------------------------- what does not exist
@pytest.mark.parametrize("method,url,request_", [
    ("GET", "/v1/banks/nope", {}),
    ("PATCH", "/v1/banks/nope", {"json": {"enabled": False}}),
    ("DELETE", "/v1/banks/nope", {}),
    ("GET", "/v1/banks/nope/items/coffee", {}),
    ("GET", "/v1/banks/known/items/nope", {}),
    ("PATCH", "/v1/banks/known/items/nope", {"json": {"enabled": False}}),
    ("DELETE", "/v1/banks/known/items/nope", {}),
    ("GET", f"/v1/matches/{UNKNOWN_MATCH}", {}),
    ("POST", f"/v1/matches/{UNKNOWN_MATCH}/reviews", {"json": {"content_id": "astronaut", "verdict": "confirmed"}}),
    ("POST", "/v1/matches/{match}/reviews", {"json": {"content_id": "coffee-not-matched", "verdict": "confirmed"}}),
    ("POST", "/v1/matches/{match}/reviews", {"json": {"content_id": "astronaut", "bank": "nope",
                                                       "verdict": "confirmed"}}),
    ("GET", f"/v1/matches/{UNKNOWN_MATCH}/pairs/0.png", {}),
    ("GET", "/v1/matches/{match}/pairs/99.png", {}),
    ("GET", "/v1/matches/{match}/pairs/-1.png", {}),
    ("GET", "/v1/nothing-here", {}),
    # regression: a NUL reached PostgreSQL, a 500 there (test_nul_never_reaches_postgresql)
    ("GET", "/v1/banks/%00", {}),
    ("GET", "/v1/banks/known/items/%00", {}),
    ("GET", "/v1/matches/%00", {}),
])
def test_unknown_resources_are_404(svc, method, url, request_):
    refused(svc, 404, "not_found", method, url.format(match=svc.baseline["match_id"]), headers=svc.h["admin"],
            **request_)


def test_unknown_bank_for_an_upload_is_404(svc):
    refused(svc, 404, "not_found", "POST", "/v1/banks/nope/items", headers=svc.h["curator"],
            data={"content_id": "x"}, files={"image": ("x.jpg", svc.good)})
    refused(svc, 404, "not_found", **upload(svc, "match", svc.good, banks="known,nope"))


def test_conflicts_are_409(svc):
    refused(svc, 409, "conflict", "POST", "/v1/banks", json={"name": "known"}, headers=svc.h["curator"])
    refused(svc, 409, "conflict", "POST", "/v1/banks/known/items", headers=svc.h["curator"],
            data={"content_id": "coffee"}, files={"image": ("x.jpg", svc.good)})


@pytest.mark.parametrize("method,url", [("PUT", "/v1/banks"), ("DELETE", "/v1/match"), ("GET", "/v1/match"),
                                        ("POST", "/v1/banks/known/items/coffee"), ("PUT", "/v1/matches"),
                                        ("POST", "/healthz")])
def test_wrong_method_is_405(svc, method, url):
    refused(svc, 405, "method_not_allowed", method, url, headers=svc.h["admin"])


@pytest.mark.parametrize("url,allowed", [("/v1/banks", "GET, POST"), ("/v1/banks/known", "DELETE, GET, PATCH"),
                                         ("/v1/match", "POST"), ("/healthz", "GET")])
def test_405_allows_every_method_of_the_path(svc, url, allowed):
    """Regression: no Allow header at all (RFC 9110 requires one); then Starlette's, of one route of the path."""
    assert svc.client.request("OPTIONS", url, headers=svc.h["admin"]).headers["allow"] == allowed


def test_the_openapi_document_gives_the_error_shape():
    responses = create_app(None).openapi()["paths"]["/v1/banks"]["post"]["responses"]
    assert "422" not in responses and responses["4XX"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}


# ---------------------------------------------------------------- who asks
AUTH_ROUTES = [("GET", "/v1/banks", {}), ("POST", "/v1/banks", {"json": {"name": "fresh"}}),
               ("DELETE", "/v1/banks/known", {}), ("GET", "/v1/audit", {}), ("GET", "/metrics", {}),
               ("GET", "/v1/matches", {}), ("GET", "/v1/matches/{match}", {})]


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Bearer cs_wrong", "cs_wrong",
                                           "Basic {admin}", "Bearer {revoked}", "Bearer {admin}x"])
def test_without_a_valid_key_is_401(svc, authorization):
    keys = {role: h["Authorization"].removeprefix("Bearer ") for role, h in svc.h.items()}
    headers = {} if authorization is None else {"Authorization": authorization.format(**keys)}
    for method, url, request_ in AUTH_ROUTES:
        refused(svc, 401, "unauthorized", method, url.format(match=svc.baseline["match_id"]), headers=headers,
                **request_)
    for route in ROUTES:
        refused(svc, 401, "unauthorized", **upload(svc, route, svc.good) | {"headers": headers})


@pytest.mark.parametrize("role,method,url,request_", [
    ("matcher", "GET", "/v1/banks", {}),
    ("matcher", "POST", "/v1/banks", {"json": {"name": "fresh"}}),
    ("matcher", "GET", "/v1/banks/known", {}),
    ("matcher", "PATCH", "/v1/banks/known", {"json": {"enabled": False}}),
    ("matcher", "DELETE", "/v1/banks/known", {}),
    ("matcher", "POST", "/v1/banks/known/items", {"data": {"content_id": "x"}, "files": {"image": ("x", b"x")}}),
    ("matcher", "GET", "/v1/banks/known/items/coffee", {}),
    ("matcher", "PATCH", "/v1/banks/known/items/coffee", {"json": {"enabled": False}}),
    ("matcher", "DELETE", "/v1/banks/known/items/coffee", {}),
    ("matcher", "POST", "/v1/matches/{match}/reviews", {"json": {"content_id": "astronaut", "verdict": "confirmed"}}),
    ("matcher", "GET", "/v1/matches/{match}/pairs/0.png", {}),
    ("matcher", "GET", "/v1/audit", {}),
    ("curator", "GET", "/v1/audit", {}),
])
def test_a_role_below_the_route_is_403(svc, role, method, url, request_):
    assert role in refused(svc, 403, "forbidden", method, url.format(match=svc.baseline["match_id"]),
                           headers=svc.h[role], **request_)


def test_a_matcher_cannot_read_another_keys_match(svc):
    match_id = svc.baseline["match_id"]
    refused(svc, 404, "not_found", "GET", f"/v1/matches/{match_id}", headers=svc.h["other"])
    listed = svc.client.get("/v1/matches", headers=svc.h["other"]).json()["matches"]
    assert match_id not in {m["match_id"] for m in listed}
    assert svc.client.get(f"/v1/matches/{match_id}", headers=svc.h["matcher"]).status_code == 200
    assert svc.client.get(f"/v1/matches/{match_id}", headers=svc.h["curator"]).status_code == 200


# ---------------------------------------------------------------- PostgreSQL
def test_nul_never_reaches_postgresql(tmp_path, postgres_url):
    """PostgreSQL text holds no NUL (psycopg refuses it: a 500); SQLite takes it, so the tests above pass there."""
    engine = BankEngine.open(tmp_path / "data", postgres_url)
    try:
        s = SimpleNamespace(engine=engine, client=TestClient(create_app(engine)), good=b"not decoded",
                            h={"admin": bearer(engine.store.create_key(Actor("cli", "admin"), "root", "admin"))})
        s.h["matcher"] = s.h["curator"] = s.h["admin"]
        assert s.client.post("/v1/banks", json={"name": "known"}, headers=s.h["admin"]).status_code == 201
        for url in ("/v1/banks/%00", "/v1/banks/a%00/items/b", "/v1/banks/a/items/%00", "/v1/matches/%00",
                    "/v1/matches/%00/pairs/0.png"):
            refused(s, 404, "not_found", "GET", url, headers=s.h["admin"])
        refused(s, 422, "invalid_request", "POST", "/v1/banks", json={"name": "x", "description": "\x00"},
                headers=s.h["admin"])
        refused(s, 422, "invalid_request", **upload(s, "match", s.good, external_id="\x00"))
        refused(s, 422, "invalid_request", **upload(s, "items", s.good, content_id="\x00"))
    finally:
        engine.close()
