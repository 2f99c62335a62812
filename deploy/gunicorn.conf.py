"""gunicorn settings for the app servers (deploy/systemd, deploy/compose.yaml, ``hospital run``, benchmarks/load.py).

``gunicorn --config deploy/gunicorn.conf.py --workers N --bind HOST:PORT wsgi:app``; the command line wins over
this file. See docs/scaling.md for the figures behind the choices.
"""

worker_class = "gthread"
workers = 2
threads = 8
"""Eight requests in flight per worker: a request mostly waits on PostgreSQL or the object store."""

keepalive = 65
"""Seconds an idle keep-alive connection stays open. Longer than nginx's upstream ``keepalive_timeout`` (50 s in
deploy/nginx.conf) and than a person's pause between clicks, so the server never closes a connection at the
moment the other side sends a request on it. With gunicorn's default (2 s) that race resets connections (at
nginx: a 502 for a POST it may not repeat). An idle connection costs a socket in the worker's poller, not a
thread."""

worker_connections = 1000
"""Open connections per worker, idle keep-alive ones included; beyond it a worker stops accepting."""

backlog = 2048
"""Connections the kernel queues before a worker accepts them (capped by net.core.somaxconn)."""

timeout = 60
"""A worker that shows no sign of life this long is restarted, resetting every connection it holds; twice the
default, so a worker starved of CPU on a saturated machine is not killed for it."""

graceful_timeout = 5
