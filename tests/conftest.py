"""Shared fixtures. Every database test runs on SQLite, and on PostgreSQL too when
CDP_TEST_DATABASE_URL names a PostgreSQL server database (e.g. postgresql+psycopg://postgres@127.0.0.1/test).

Each test gets its own fresh, migrated database: a copy of a template migrated once per session
(a file copy on SQLite, CREATE DATABASE … TEMPLATE on PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from cdp.app import create_app
from cdp.config import Config, DatabaseConfig
from cdp.db.engine import make_engine, normalise_url
from cdp.db.migrate import upgrade
from cdp.keys import Scope, create_key
from cdp.runtime import Runtime

PG_URL = os.environ.get("CDP_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


class PostgresDatabases:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(normalise_url(url))
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.template = f"cdp_tmpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def create(self, template: str = "template0") -> str:
        name = f"cdp_t_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    if not PG_URL:
        yield None
        return
    dbs = PostgresDatabases(PG_URL)
    with dbs.admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbs.template}" TEMPLATE template0'))
    engine = make_engine(dbs.url.set(database=dbs.template).render_as_string(hide_password=False))
    upgrade(engine)
    engine.dispose()
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(
    backend: str, tmp_path: Path, sqlite_template: Path, postgres: PostgresDatabases | None
) -> Iterator[str]:
    """A fresh database at the current schema revision."""
    if backend == "sqlite":
        path = tmp_path / "cdp.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    assert postgres is not None
    url = postgres.create(template=postgres.template)
    yield url
    postgres.drop(url)


@pytest.fixture
def empty_database_url(
    backend: str, tmp_path: Path, postgres: PostgresDatabases | None
) -> Iterator[str]:
    """A fresh database with no schema at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert postgres is not None
    url = postgres.create()
    yield url
    postgres.drop(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A plain engine on the test database, for tests that check what was stored."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def make_config(url: str, **overrides: object) -> Config:
    return Config(database=DatabaseConfig(url=url)).model_copy(update=overrides)


@pytest.fixture
def config(database_url: str) -> Config:
    return make_config(database_url)


@pytest.fixture
def runtime(config: Config) -> Iterator[Runtime]:
    rt = Runtime.start(config)
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


@pytest.fixture
def api_keys(runtime: Runtime) -> dict[str, str]:
    """A key per scope: {"read": …, "collect": …, "admin": …}."""
    found = {}
    with runtime.transaction() as session:
        for scope in Scope:
            found[scope.value] = create_key(session, frozenset({scope}), f"test {scope}")[1]
    return found


def gql(client: TestClient, key: str | None, query: str, **variables: object) -> dict:
    """POST a GraphQL query; returns the decoded body with `_status` added."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    body = response.json()
    body["_status"] = response.status_code
    return body


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[str]:
    """The app served by a real uvicorn server on 127.0.0.1 in a background thread; yields its
    base URL (e.g. http://127.0.0.1:41234). Stopped, with its writer, after the test."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
