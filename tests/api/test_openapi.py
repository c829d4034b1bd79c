"""The OpenAPI document is the contract: integers are bounded, every error answer is documented,
and the answers match it (the fuzzer, scripts/fuzz.py, checks the same on every route)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import add_user, login
from triage.models import Role

TOO_BIG = 2**31  # one past the largest id both databases store (INTEGER: 32-bit on PostgreSQL)


def _integer_schemas(schema: dict) -> list[dict]:
    found = []
    if schema.get("type") == "integer":
        found.append(schema)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _integer_schemas(sub)
    return found


def test_every_integer_parameter_is_bounded(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    unbounded = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                for s in _integer_schemas(param["schema"]):
                    if s.get("maximum", TOO_BIG) >= TOO_BIG or "minimum" not in s:
                        unbounded.append(f"{method.upper()} {path} {param['name']}")
    for name, component in spec["components"]["schemas"].items():
        for field, prop in component.get("properties", {}).items():
            for s in _integer_schemas(prop):
                if s.get("maximum", TOO_BIG) >= TOO_BIG and component.get("title") != name + "Public":
                    unbounded.append(f"{name}.{field}")
    request_bodies = {ref.rsplit("/", 1)[1] for ops in spec["paths"].values() for op in ops.values()
                      for content in op.get("requestBody", {}).get("content", {}).values()
                      for ref in [content["schema"].get("$ref", "")] if ref}
    assert [u for u in unbounded if "." not in u or u.split(".")[0] in request_bodies] == []


def test_error_answers_are_documented_on_every_api_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    missing = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in ops.items():
            for status in ("401", "403", "404", "409", "413", "422"):
                if status not in op["responses"]:
                    missing.append(f"{method.upper()} {path} {status}")
    assert missing == []


def test_an_integer_past_the_database_range_is_a_422_with_typed_problems(client: TestClient, engine) -> None:
    add_user(engine, "chief", Role.manager, Role.officer)
    login(client, "chief")
    for url in (f"/api/sightings/{TOO_BIG}", f"/api/sightings/{2**63}", f"/api/subjects/{TOO_BIG}",
                f"/api/flags/{TOO_BIG}", f"/api/sightings?offset={TOO_BIG}", f"/api/audit?offset={TOO_BIG}"):
        r = client.get(url)
        assert r.status_code == 422, (url, r.status_code, r.text)
        problems = r.json()["detail"]
        assert problems and all(set(p) == {"loc", "msg", "type"} for p in problems), problems
    # The largest stored integer is still a valid id: simply not found.
    assert client.get(f"/api/sightings/{TOO_BIG - 1}").status_code == 404
    # A web page says the same in words, not a server error.
    assert client.get(f"/sightings/{TOO_BIG}").status_code == 422
