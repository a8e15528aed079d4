"""The Host/Origin rules against DNS rebinding (serve/hosts.py), over generated names: a DNS name is
never taken for this server unless an allow-list names it, whatever the bind address or port; the
server's own addresses on its own port always are. (The middleware on a live server is tested in
tests/integration/test_serve_security.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from londinium.errors import LondiniumError
from londinium.serve.hosts import TrustedHosts, guard, split_host

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
# Names a rebinding page can use: anything under a domain its owner controls, "localhost" and
# loopback-looking labels included (never the bare name "localhost" or an IP address).
NAMES = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL | st.just("localhost") | st.just("127"), max_size=3),
                  st.sampled_from(["example", "com", "io", "localhost-evil", "lan"]))
PORTS = st.integers(1, 65535)
BINDS = st.sampled_from(["127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "192.0.2.4"])


@given(name=NAMES, port=PORTS, given_port=st.none() | PORTS, bind=BINDS)
def test_a_dns_name_is_refused_unless_allowed(name, port, given_port, bind) -> None:
    host = name if given_port is None else f"{name}:{given_port}"
    assert TrustedHosts(bind).host_refusal(host, port, "http") is not None
    assert TrustedHosts(bind, allowed_hosts=(name,)).host_refusal(host, port, "http") is None
    assert TrustedHosts(bind, allowed_hosts=("*",)).host_refusal(host, port, "http") is None


@given(port=PORTS, bind=BINDS, ours=st.sampled_from(["127.0.0.1", "localhost", "[::1]", "127.8.9.10"]))
def test_a_loopback_host_on_our_port_is_accepted_and_another_port_is_not(port, bind, ours) -> None:
    trusted = TrustedHosts(bind)
    assert trusted.host_refusal(f"{ours}:{port}", port, "http") is None
    assert trusted.host_refusal(f"{ours}:{port % 65535 + 1}", port, "http") is not None


def test_ip_addresses_beyond_loopback_count_only_when_bound_beyond_it() -> None:
    assert TrustedHosts("127.0.0.1").host_refusal("192.0.2.7:8000", 8000, "http") is not None
    assert TrustedHosts("0.0.0.0").host_refusal("192.0.2.7:8000", 8000, "http") is None
    assert TrustedHosts("0.0.0.0").host_refusal("192.0.2.7", 80, "http") is None  # no port: the scheme's
    assert TrustedHosts("0.0.0.0").host_refusal("192.0.2.7", 443, "https") is None


def test_origins_are_the_servers_own_or_listed() -> None:
    trusted = TrustedHosts("127.0.0.1", allowed_origins=("https://app.example.com",))
    assert trusted.origin_refusal(None, "127.0.0.1:8000") is None  # no Origin: not a browser's cross-site request
    assert trusted.origin_refusal("http://127.0.0.1:8000", "127.0.0.1:8000") is None
    assert trusted.origin_refusal("https://app.example.com", "127.0.0.1:8000") is None
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8001", "file://", "https://app.example.com.evil.example"):
        assert "serve.allowed_origins" in trusted.origin_refusal(origin, "127.0.0.1:8000"), origin


@pytest.mark.parametrize("value, parsed", [("Example.COM:8080", ("example.com", 8080)), ("[::1]:80", ("[::1]", 80)),
                                           ("localhost", ("localhost", None)), ("[::1]", ("[::1]", None))])
def test_split_host(value, parsed) -> None:
    assert split_host(value) == parsed


@pytest.mark.parametrize("value", ["a:b", "a:0", "a:70000", "[::1]x", "a:", "::1"])
def test_split_host_refuses_malformed_ports(value) -> None:
    with pytest.raises(ValueError):
        split_host(value)


def test_a_bad_allow_list_entry_is_one_line_naming_the_setting() -> None:
    from fastapi import FastAPI

    with pytest.raises(LondiniumError, match=r"serve.allowed_hosts: 'api.example.com:99999'"):
        guard(FastAPI(), "127.0.0.1", ["api.example.com:99999"], [], refuse=lambda *a: None)
