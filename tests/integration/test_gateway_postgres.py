"""Two gateway processes on one PostgreSQL database (a real server from the system packages, started
here): one key's requests-per-minute limit holds exactly across both, and both write one ledger that
the CLI reports. Skipped without PostgreSQL, except under CI, where that is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gateway_helpers import Upstream, postgres_cluster, upstream_server, write_config
from serve_helpers import free_port, stop, wait_healthy
from train_helpers import cli_in_process


@pytest.fixture(scope="module")
def database():
    with postgres_cluster() as url:
        yield url


@pytest.mark.slow  # two gateway processes and a PostgreSQL cluster: 10-20 s on 2 busy cores
def test_two_gateways_on_one_postgres_share_limits_exactly_and_one_ledger(database, tmp_path) -> None:
    upstream = Upstream("up")
    with upstream_server(upstream) as base:
        ports = [free_port(), free_port()]
        cfg = write_config(tmp_path / "gw.toml", [{"name": "up", "base_url": base, "model": "up", "input_price": 1.0, "output_price": 1.0}],
                           [{"alias": "m", "backends": ["up"]}], database=database)
        rc, printed, err = cli_in_process(["gateway", "keys", "create", "shared", "--rpm", "10", "--config", str(cfg)])
        assert rc == 0, err
        secret = printed.strip().splitlines()[-1]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "londinium", "gateway", "--config", str(cfg), "--port", str(p)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
        try:
            for p in ports:
                wait_healthy(f"http://127.0.0.1:{p}", timeout=60)

            def one(i: int) -> int:
                r = httpx.post(f"http://127.0.0.1:{ports[i % 2]}/v1/completions", timeout=30,
                               json={"model": "m", "prompt": "a b", "max_tokens": 5}, headers={"Authorization": f"Bearer {secret}"})
                return r.status_code

            start = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(one, range(30)))
            refilled = int((time.monotonic() - start) * 10 / 60)  # rpm 10: one more every 6 s
        finally:
            for proc in procs:
                stop(proc)
    # Exact: never more than the bucket held (10, plus one per 6 s the burst lasted, if a request came
    # that late), and no false rejection (at least 10).
    assert 10 <= statuses.count(200) <= 10 + refilled and statuses.count(429) == 30 - statuses.count(200)
    assert upstream.calls == statuses.count(200)  # a rejected request never reached the backend
    rc, printed, err = cli_in_process(["gateway", "usage", "--by", "key", "--format", "json", "--config", str(cfg)])
    assert rc == 0, err
    import json

    [row] = json.loads(printed)
    assert row["requests"] == 30 and row["errors"] == statuses.count(429)
    assert row["prompt_tokens"] == 2 * statuses.count(200) and row["completion_tokens"] == 5 * statuses.count(200)
    assert row["cost"] == pytest.approx(7 * statuses.count(200) / 1e6)
