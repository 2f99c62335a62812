"""The yardstick for benchmarks/load.py: a bare Flask + SQLAlchemy app answering one query per request, served by
the same gunicorn settings as the hospital. ``gunicorn benchmarks.bare_app:app`` with DATABASE_URL set."""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask, jsonify

engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=10, max_overflow=10)
app = Flask(__name__)


@app.get("/one-query")
def one_query() -> object:
    with engine.connect() as conn:
        count = conn.scalar(sa.text("SELECT count(*) FROM facility"))
    return jsonify({"facilities": count})
