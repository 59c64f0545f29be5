"""A testnet as text for people (`harness up`, the kept testnets after a pytest session): whole
ids and URLs, each on a line of its own, whatever the width (a terminal wraps long lines, a
pipe keeps them); nothing is ever cut to fit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.node.description import Role


def testnet_lines(document: Mapping[str, Any]) -> list[str]:
    """The testnet of `Testnet.describe()` as lines of text: its nodes grouped by subnet, then
    unassigned and API boundary nodes, each with the URLs of what it serves."""
    nodes: list[Mapping[str, Any]] = document["nodes"]
    lines = [
        f"testnet {document['testnet']} on the {document['backend']} backend, registry version "
        f"{document['registry_version']}, {len(nodes)} node(s)"
    ]
    proxy = document.get("proxy")
    if proxy:
        hostport = str(proxy).removeprefix("socks5://")
        lines.append(
            f"the URLs are reachable through the SOCKS5 proxy {hostport}, "
            f"e.g. curl --socks5-hostname {hostport} URL"
        )
    if document.get("prometheus"):
        lines.append(f"Prometheus (scraping every metrics endpoint): {document['prometheus']}")
    width = max((len(name) for node in nodes for name in node["urls"]), default=0)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for node in nodes:
        if node["role"] == Role.REPLICA:
            title = f"subnet {node['subnet']} ({node['subnet_type']})"
        elif node["role"] == Role.API_BOUNDARY:
            title = "API boundary nodes"
        else:
            title = "unassigned nodes"
        groups.setdefault(title, []).append(node)
    for title, members in groups.items():
        lines += ["", title]
        for node in members:
            domain = f"  domain {node['domain']}" if node.get("domain") else ""
            lines.append(f"  {node['id']}  {node['address']}{domain}")
            lines += [f"    {name:<{width}}  {url}" for name, url in node["urls"].items()]
    return lines
