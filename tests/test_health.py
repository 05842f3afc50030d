from __future__ import annotations

from starlette.testclient import TestClient

from cdp.app import create_app
from cdp.db.engine import make_engine


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_when_the_database_is_unreachable(runtime):
    with TestClient(create_app(runtime)) as client:
        runtime.engine.dispose()
        runtime.engine = make_engine("sqlite:////nonexistent/dir/cdp.db")
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unreachable"}
