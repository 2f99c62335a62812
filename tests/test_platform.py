"""Platform-level guarantees: migrations both ways on both databases, production settings, the OpenAPI spec."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa

from app.cli import downgrade, migrate
from app.config import Config, ConfigError
from tests.conftest import PG_ADMIN_URL, _pg_url


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_upgrade_and_downgrade_on_postgresql():
    name = f"hospital_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _pg_url(name)
        migrate(url)
        assert {"patient", "audit_event", "user_account"} <= _tables(url)
        downgrade(url, "base")
        assert _tables(url) == set()
        migrate(url)
        assert "patient" in _tables(url)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.smoke
def test_migrations_upgrade_and_downgrade_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    assert {"patient", "audit_event"} <= _tables(url)
    downgrade(url, "base")
    assert _tables(url) == set()


def test_schema_matches_models_after_migrations(engine):
    """Autogenerate finds nothing to do: the migrations and the models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.db import Base

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_production_refuses_the_default_secret_and_sqlite(monkeypatch):
    monkeypatch.setenv("HOSPITAL_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Config.from_env().validate()
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    with pytest.raises(ConfigError, match="PostgreSQL"):
        Config.from_env().validate()
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://db/hospital")
    cfg = Config.from_env()
    cfg.validate()
    assert cfg.SESSION_COOKIE_SECURE is True


def test_openapi_describes_every_api_route(app, client):
    spec = client.get("/api/v1/openapi.json").json
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint.startswith("api-docs"):
            continue
        path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    patient = spec["components"]["schemas"]["NewPatient"]
    assert set(patient["required"]) == {"given_name", "family_name", "birth_date", "sex"}


def test_openapi_describes_every_problem_response(client):
    """Every operation names the problem answers it can give, each as RFC 9457 problem+json; none says 500."""
    spec = client.get("/api/v1/openapi.json").json
    problem = {"$ref": "#/components/schemas/Problem"}
    required = set(spec["components"]["schemas"]["Problem"]["required"])
    assert {"type", "title", "status", "detail", "instance"} <= required
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            codes = set(op["responses"])
            needed = {"400", "401", "403", "404", "422"}
            if method in ("post", "put", "patch", "delete"):
                needed |= {"409", "413", "415"}
            assert needed <= codes, (method, path, needed - codes)
            assert "default" not in codes and "500" not in codes, (method, path)
            for code in needed:
                assert op["responses"][code]["content"]["application/problem+json"]["schema"] == problem
            assert any(c.startswith("2") for c in codes), (method, path)
    ids = spec["paths"]["/api/v1/patients/{patient_id}"]["parameters"][0]["schema"]
    assert ids == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
