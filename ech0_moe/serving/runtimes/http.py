"""What the server runtimes (Ollama, OpenAI-compatible) share about HTTP: which hosts are this
machine's, how long a connection may take, and one line for each way a request can fail."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx

from ech0_moe.errors import BackendError

CONNECT_S = 10.0  # the longest wait for a connection to a server


def is_loopback(url: str) -> bool:
    """True when `url`'s host is this machine, decided on the parsed address: 127.x in any
    spelling (127.1, 2130706433), [::1], an IPv4-mapped loopback, 0.0.0.0 and localhost names
    (localhost., *.localhost). Such hosts are reached directly, never through a proxy."""
    try:
        host = (urlparse(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # inet_aton's spellings: 127.1, 0x7f.1, 2130706433
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


@contextlib.contextmanager
def http_failures(who: str, method: str, path: str, waited: float) -> Iterator[None]:
    """httpx's failures inside as one `BackendError` line naming `who` ("Ollama at URL"): a hung
    host (waited `waited` s for a byte) is not retried, since asking again would only multiply
    the wait; an unreachable one is (transient)."""
    try:
        yield
    except httpx.TimeoutException:
        raise BackendError(f"{who} did not answer {method} {path} within {waited:g} s (timeout)", silent=True) from None
    except httpx.HTTPError as exc:
        raise BackendError(f"{who} is unreachable: {exc}", transient=True) from None
