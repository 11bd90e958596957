"""Address ranges: containment that holds across IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def within(inner: Network, outer: Network) -> bool:
    """``inner`` lies inside ``outer``. False across IP versions, where ``subnet_of`` raises TypeError
    (and where, typed, it cannot be called on the union without narrowing both sides first)."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False
