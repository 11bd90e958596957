"""The resource providers scripts/azure_preflight.sh registers, read from the script itself."""

from __future__ import annotations

import re

from tests.infra.stack_fixtures import ROOT

SCRIPT = ROOT / "scripts" / "azure_preflight.sh"
REGISTERED_BY_PREFLIGHT = frozenset(re.findall(r"^\s+(Microsoft\.[A-Za-z]+)\b", SCRIPT.read_text(), re.MULTILINE))
