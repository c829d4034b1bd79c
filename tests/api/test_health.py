from fastapi.testclient import TestClient


def test_healthz_answers(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_reports_each_check(client: TestClient) -> None:
    r = client.get("/readyz")
    body = r.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["migrations"] == "ok"
    assert set(body["checks"]) == {"database", "migrations", "models", "face_model"}
    assert body["checks"]["face_model"] == "ok"
    assert r.status_code == (200 if body["checks"]["models"] == "ok" else 503)


def test_readyz_not_ready_when_migrations_behind(make_client, engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'behind'")
    r = make_client().get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["migrations"].startswith("not at head")
