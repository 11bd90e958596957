"""Where an Azure resource lives: the keyword arguments every Azure resource of a stack shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import pulumi


class Placement(TypedDict):
    """Resource group, region and tags, passed as ``**placement`` to a component's args or a resource.

    A TypedDict rather than a plain dict so ``mypy --strict`` checks each key against the provider's
    typed signature (2026-12-01: a ``dict[str, object]`` spread into ``NetworkSecurityGroup`` matched
    none of its parameters).
    """

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    tags: Mapping[str, str]
