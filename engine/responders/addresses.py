"""Which addresses a responder may have: the policy against request forgery.

A responder URL comes from outside: a certificate's Authority Information
Access (on a host where customers bring their own certificates, from the
customer) or ``--url``. Followed blindly, it makes staplectl a proxy into
the host's own network: the cloud metadata service at 169.254.169.254
answered here, and its status and headers came back in the error. So the
address a responder resolves to is checked right before connecting (after
the lookup, so a name cannot resolve to one thing when checked and another
when used):

- link-local, cloud metadata, loopback, private (RFC 1918, ULA), shared
  (CGNAT), unspecified, multicast and reserved addresses are refused;
- unless the operator allows them, by network, in ``responder.allow``
  (for an internal CA whose responder lives on a private network, or a
  responder on this host). ``loopback``, ``private`` and ``link-local``
  name their ranges.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _nets(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


#: cloud metadata services: AWS, GCP, Azure (IPv4 and AWS's IPv6), AWS ECS, Alibaba
METADATA = _nets("169.254.169.254/32", "fd00:ec2::254/128", "169.254.170.2/32", "100.100.100.200/32")
#: refused unless allowed, by what they are
SPECIAL: tuple[tuple[str, tuple[Network, ...]], ...] = (
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("shared (CGNAT)", _nets("100.64.0.0/10")),
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("reserved", _nets("240.0.0.0/4")),
)
#: the names an operator may allow instead of writing the networks out
NAMED = {"loopback": SPECIAL[1][1], "private": SPECIAL[2][1], "link-local": SPECIAL[0][1]}


def parse_allow(items: Iterable[str]) -> tuple[Network, ...]:
    """``responder.allow``: networks (``10.1.0.0/16``), addresses, or a name
    of NAMED. ValueError names the item that is none of these."""
    networks: list[Network] = []
    for item in items:
        if item in NAMED:
            networks += NAMED[item]
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            known = ", ".join(NAMED)
            raise ValueError(f"{item!r} is neither a network, an address nor one of: {known}") from None
    return tuple(networks)


def refusal(address: str, allow: tuple[Network, ...] = ()) -> str | None:
    """Why a responder at ``address`` is refused ("a loopback address"), or None."""
    ip: Address = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in network for network in allow):
        return None
    if any(ip in network for network in METADATA):
        return "a cloud metadata address"
    for name, networks in SPECIAL:
        if any(ip in network for network in networks):
            return f"a {name} address"
    return None
