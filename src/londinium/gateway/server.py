"""`londinium gateway`: check the config whole, then serve until SIGTERM.

Everything that can be checked before the port opens is: the config (`settings`), the database
(opened, its tables made), each router file, the chain's steps. SIGTERM (or SIGHUP, or a first
Ctrl-C) drains as `londinium serve` does: new requests get 503, running ones (streams included)
finish within `gateway.shutdown_timeout_s`, the ledger rows still being written are written, and the
process exits 0.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from londinium.errors import LondiniumError
from londinium.gateway.settings import GatewaySettings
from londinium.serve.connections import connection_limits, quiet_repeats
from londinium.serve.hosts import is_loopback
from londinium.serve.server import DrainingServer


def run_gateway(settings: GatewaySettings) -> int:
    from londinium.gateway.app import create_app
    from londinium.gateway.runtime import Gateway

    g = settings.gateway
    if not is_loopback(g.host) and not g.keys_required:
        print(f"londinium gateway: warning: listening on {g.host} with gateway.keys_required = false: anyone who can "
              "reach it can use every backend", file=sys.stderr)
    gateway = Gateway(settings)
    app = create_app(gateway)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_repeats()
    config = uvicorn.Config(app, host=g.host, port=g.port, access_log=False, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=int(g.shutdown_timeout_s) + 5, **connection_limits(g))
    server = DrainingServer(config, gateway, g.shutdown_timeout_s, label="londinium gateway")
    routes = ", ".join(f"{r.alias} -> {'/'.join(r.backends)}" for r in settings.routes)
    print(f"londinium gateway: http://{g.host}:{g.port}/v1  routes {routes}  (database "
          f"{'PostgreSQL' if gateway.store.postgres else gateway.store.url})", file=sys.stderr)
    server.run()
    if not server.started:
        raise LondiniumError(f"could not listen on {g.host}:{g.port} (is the port in use? set gateway.port or --port)")
    return 0
