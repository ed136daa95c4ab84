"""`copyscope serve`'s API end to end in process (FastAPI TestClient), on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from copyscope.jobs.cli import main
from copyscope.jobs.serve import create_app
from copyscope.pipeline.bank_engine import BankEngine
from copyscope.pipeline.bank_store import Actor
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.second_look import SECOND_LOOK_INLIERS

CLI = Actor("cli", "admin")


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def photo(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def copy_of(name: str) -> bytes:
    """An edited copy: a crop, re-encoded at a lower quality."""
    image = photo(name)
    h, w = image.shape[:2]
    return jpeg(image[h // 10: h - h // 8, w // 8: w - w // 10], quality=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = BankEngine.open(tmp_path / "data", url)
    keys = {role: engine.store.create_key(CLI, role, role) for role in ("admin", "curator", "matcher")}
    keys["matcher2"] = engine.store.create_key(CLI, "matcher2", "matcher")
    client = TestClient(create_app(engine))
    yield client, {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    engine.close()


def add(client, headers, bank: str, content_id: str, image: bytes, metadata: str | None = None):
    fields = {"content_id": content_id} | ({"metadata": metadata} if metadata is not None else {})
    return client.post(f"/v1/banks/{bank}/items", headers=headers, files={"image": ("x.jpg", image, "image/jpeg")},
                       data=fields)


def match(client, headers, image: bytes, **fields):
    response = client.post("/v1/match", headers=headers, files={"image": ("q.jpg", image, "image/jpeg")},
                           data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def found(record: dict) -> list[tuple[str, str]]:
    return [(m["bank"], m["content_id"]) for m in record["matches"]]


def test_banks_items_match_review(service):
    client, key = service
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").status_code == 200
    assert client.post("/v1/banks", json={"name": "known"}).status_code == 401
    assert client.post("/v1/banks", json={"name": "known"}, headers=key["matcher"]).status_code == 403
    created = client.post("/v1/banks", json={"name": "known", "description": "removed posts"},
                          headers=key["curator"])
    assert created.status_code == 201 and created.json()["match_threshold"] == 0.9
    assert client.post("/v1/banks", json={"name": "known"}, headers=key["curator"]).status_code == 409

    for name in ("astronaut", "coffee", "chelsea"):
        response = add(client, key["curator"], "known", name, jpeg(photo(name)), json.dumps({"source": name}))
        assert response.status_code == 201 and response.json()["metadata"] == {"source": name}
    first_astronaut = client.get("/v1/banks/known/items/astronaut", headers=key["curator"]).json()
    again = add(client, key["curator"], "known", "astronaut", jpeg(photo("astronaut")))
    assert again.status_code == 200 and again.json()["created"] == first_astronaut["created"]
    assert add(client, key["curator"], "known", "astronaut", jpeg(photo("coffee"))).status_code == 409
    assert client.get("/v1/banks/known", headers=key["curator"]).json()["items"] == 3

    record = match(client, key["matcher"], copy_of("astronaut"), external_id="upload-1")
    assert found(record)[:1] == [("known", "astronaut")] and record["decision"] == "match"
    best = record["matches"][0]
    assert best["score"] >= 0.9 and best["decision"] == "match" and best["metadata"] == {"source": "astronaut"}
    assert best["evidence"]["inliers"] >= 20 and len(best["evidence"]["query_box"]) == 4
    assert match(client, key["matcher"], jpeg(photo("camera")))["matches"] == []  # no copy: empty list

    # the record: readable by its key and curators, not by another matcher
    match_id = record["match_id"]
    assert client.get(f"/v1/matches/{match_id}", headers=key["matcher"]).json()["external_id"] == "upload-1"
    assert client.get(f"/v1/matches/{match_id}", headers=key["matcher2"]).status_code == 404
    assert client.get("/v1/matches", headers=key["matcher2"]).json()["matches"] == []
    review = {"content_id": "astronaut", "verdict": "confirmed", "note": "same photo"}
    assert client.post(f"/v1/matches/{match_id}/reviews", json=review, headers=key["matcher"]).status_code == 403
    reviewed = client.post(f"/v1/matches/{match_id}/reviews", json=review, headers=key["curator"])
    assert reviewed.status_code == 201 and reviewed.json()["reviews"][0]["key"] == "curator"
    bad_review = review | {"content_id": "coffee"}
    assert client.post(f"/v1/matches/{match_id}/reviews", json=bad_review, headers=key["curator"]).status_code == 404
    drawn = client.get(f"/v1/matches/{match_id}/pairs/0.png", headers=key["curator"])
    assert drawn.status_code == 200 and Image.open(io.BytesIO(drawn.content)).size[0] > 100

    audit = client.get("/v1/audit", headers=key["admin"])
    assert client.get("/v1/audit", headers=key["curator"]).status_code == 403
    actions = [(e["key"], e["action"]) for e in audit.json()["entries"] if e["key"] != "cli"][::-1]
    assert actions[:4] == [("curator", "bank.create")] + [("curator", "item.add")] * 3
    assert actions[-1] == ("curator", "review.add")


def test_matched_from_the_moment_an_add_returns_and_never_after_a_delete(service):
    client, key = service
    client.post("/v1/banks", json={"name": "known"}, headers=key["curator"])
    client.post("/v1/banks", json={"name": "other"}, headers=key["curator"])
    add(client, key["curator"], "known", "astronaut", jpeg(photo("astronaut")))
    add(client, key["curator"], "other", "coffee", jpeg(photo("coffee")))
    query = copy_of("coffee")
    assert found(match(client, key["matcher"], query)) == [("other", "coffee")]
    assert found(match(client, key["matcher"], query, banks="known")) == []  # another bank asked for

    assert client.patch("/v1/banks/other/items/coffee", json={"enabled": False},
                        headers=key["curator"]).json()["enabled"] is False
    assert found(match(client, key["matcher"], query)) == []
    client.patch("/v1/banks/other/items/coffee", json={"enabled": True}, headers=key["curator"])
    assert found(match(client, key["matcher"], query)) == [("other", "coffee")]
    client.patch("/v1/banks/other", json={"enabled": False}, headers=key["curator"])
    assert found(match(client, key["matcher"], query)) == []
    client.patch("/v1/banks/other", json={"enabled": True, "match_threshold": 1.0}, headers=key["curator"])
    assert [m["decision"] for m in match(client, key["matcher"], query)["matches"]] == ["review"]

    assert client.delete("/v1/banks/other/items/coffee", headers=key["curator"]).status_code == 200
    assert found(match(client, key["matcher"], query)) == []
    assert client.get("/v1/banks/other/items/coffee", headers=key["curator"]).status_code == 404
    add(client, key["curator"], "other", "rocket", jpeg(photo("rocket")))
    assert found(match(client, key["matcher"], copy_of("rocket"))) == [("other", "rocket")]
    assert client.delete("/v1/banks/other", headers=key["curator"]).json()["items"] == 1
    assert found(match(client, key["matcher"], copy_of("rocket"))) == []
    assert client.get("/readyz").json()["items"] == 1

    text = client.get("/metrics", headers=key["matcher"]).text
    assert 'copyscope_requests_total{method="POST",route="/v1/match",status="200"}' in text
    assert 'copyscope_bank_items{bank="known"} 1.0' in text and "copyscope_request_seconds_bucket" in text


def test_keys_banks_and_backlog_commands(tmp_path, capsys):
    folder = tmp_path / "known"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        (folder / f"{name}.jpg").write_bytes(jpeg(photo(name)))
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "u1.jpg").write_bytes(copy_of("coffee"))
    (uploads / "u2.jpg").write_bytes(jpeg(photo("camera")))
    (uploads / "broken.jpg").write_bytes(b"not an image")
    data_dir = str(tmp_path / "data")

    assert main(["keys", "create", "--data", data_dir, "--role", "curator", "--name", "ann"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("cs_")
    assert main(["banks", "import", str(folder), "--data", data_dir, "--bank", "known", "--ray", "off",
                 "--region-model", "sscd_distilled", "--quiet"]) == 0  # the new database's uploads: student regions
    assert json.loads(capsys.readouterr().out)["added"] == 3
    out_csv = tmp_path / "backlog.csv"
    assert main(["match", str(uploads), "--data", data_dir, "--out", str(out_csv), "--ray", "off", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recorded"], summary["failed"], summary["match"]) == (2, 1, 1)
    rows = out_csv.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("u1,") and ",known,coffee," in rows[1]

    engine = BankEngine.open(data_dir)  # the database keeps the region model it was made with
    try:
        assert engine.index.region_spec == ModelSpec("sscd_distilled")
        client = TestClient(create_app(engine))
        match_id = rows[1].split(",")[1]
        record = client.get(f"/v1/matches/{match_id}", headers={"Authorization": f"Bearer {secret}"}).json()
        assert record["key"] == "backlog" and found(record) == [("known", "coffee")]
    finally:
        engine.close()
    assert main(["keys", "revoke", "--data", data_dir, "--name", "ann"]) == 0
    assert main(["keys", "list", "--data", data_dir]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["keys"][0]["revoked"] is not None


def test_a_database_keeps_its_region_model_and_its_own_model_means_none(tmp_path):
    for region, recorded in (("sscd_distilled", None), (None, None)):
        data_dir = tmp_path / f"data_{region}"
        BankEngine.open(data_dir, model="sscd_distilled", region_model=region).close()
        engine = BankEngine.open(data_dir, region_model="sscd")  # a later open keeps what the first recorded
        try:
            assert engine.index.region_spec == recorded and engine.index.spec == ModelSpec("sscd_distilled")
        finally:
            engine.close()


def test_pair_drawing_shows_the_inliers_the_match_found(tmp_path):
    engine = BankEngine.open(tmp_path / "data")
    try:
        engine.store.create_bank(CLI, "known", "", 0.9, 0.5)
        reference, query = jpeg(photo("chelsea")), copy_of("chelsea")
        engine.add_item(CLI, "known", "chelsea", {}, reference)
        evidence = engine.match(CLI, query)["matches"][0]["evidence"]
        v = engine.verification(query, reference)
        assert (v.inliers, v.matches) == (evidence["inliers"], evidence["matches"])
        assert abs(v.query_coverage - evidence["query_coverage"]) < 1e-6
    finally:
        engine.close()


def test_a_second_look_match_is_drawn_from_the_box_it_looked_at(tmp_path):
    engine = BankEngine.open(tmp_path / "data")
    try:
        engine.store.create_bank(CLI, "known", "", 0.9, 0.0)
        for name in ("rocket", "astronaut", "coffee", "chelsea"):
            engine.add_item(CLI, "known", name, {}, jpeg(photo(name)))
        host = np.array(Image.fromarray(data.camera()).convert("RGB").resize((1400, 1000)))
        host[300:390, 500:590] = np.asarray(Image.fromarray(photo("astronaut")).resize((90, 90)))  # pasted small
        upload, reference = jpeg(host, quality=80), jpeg(photo("astronaut"))
        hit = next(m for m in engine.match(CLI, upload)["matches"] if m["content_id"] == "astronaut")
        assert hit["evidence"]["second_look"] and len(hit["evidence"]["look_box"]) == 4
        closer = engine.verification(upload, reference, hit["evidence"]["look_box"])
        assert closer.inliers >= SECOND_LOOK_INLIERS > engine.verification(upload, reference).inliers
        x, y = closer.query_region[:, 0], closer.query_region[:, 1]  # in the upload's pixels, on the paste
        assert 495 <= x.min() and x.max() <= 595 and 295 <= y.min() and y.max() <= 395
    finally:
        engine.close()
