"""Listen addresses as node programs take them (`[::]:80`, `0.0.0.0:8080`, `127.0.1.5:9090`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class ListenAddress:
    """A host (IP literal or name) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, scheme: str = "http") -> str:
        """A URL to reach this address; wildcard hosts are reached on loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """Parse `host:port` or `[v6]:port`; raise ValueError naming the bad value."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"listen address {value!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"listen address {value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"listen address {value!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"listen address {value!r}: put IPv6 hosts in brackets, [{host}]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {value!r}: port {port_text!r} is not 0-65535")
    return ListenAddress(host, int(port_text))
