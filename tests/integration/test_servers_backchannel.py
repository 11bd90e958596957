"""Server-to-client requests through a virtual server (issue 16, gateway/servers/backchannel.py): a
member's ``sampling/createMessage`` and ``elicitation/create`` during a call reach the real ``mcp``
SDK client's callbacks — over Streamable HTTP (2025-era session) and legacy HTTP+SSE — and the
callbacks' answers reach the member, whose tool result carries them. A client that declared no such
capability keeps getting the refusal (the member's tool reports it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import types
from mcp.client import Client
from mcp.client.sse import sse_client

from tests.fixtures.gateway import GatewayProcess, example_adapter, start_gateway, wait_ready

CATALOG = Path(__file__).resolve().parents[1] / "upstreams" / "images.toml"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"MCPGW_IMAGE_CATALOG": str(CATALOG), "MCPGW_EXAMPLE_ADAPTER": "false", "MCPGW_SERVER_LIST_TTL": "0"}
    with start_gateway(tmp_path_factory.mktemp("servers-backchannel") / "data", env) as g:
        with g.client() as api:
            conformance = example_adapter("conformance", replicas=1, imageName="conformance-server", imageVersion="1.0")
            assert api.post("/adapters", json=conformance).status_code == 201
            wait_ready(api, "conformance", 1, timeout=40)
            body = {"name": "asks", "members": [{"adapter": "conformance", "prefix": "cf_"}]}
            assert api.post("/servers", json=body).status_code == 201
        yield g


class Callbacks:
    """The client's side: what the member asked, and the answers given."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.questions: list[str] = []

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        self.prompts.append(content.text if isinstance(content, types.TextContent) else "?")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="four"), model="test-model"
        )

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.questions.append(params.message)
        return types.ElicitResult(action="accept", content={"response": "Ada"})


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


async def _ask_both(client: Client) -> tuple[str, str]:
    sampled = await client.call_tool("cf_test_sampling", {"prompt": "What is 2+2?"})
    elicited = await client.call_tool("cf_test_elicitation", {"message": "Your name?"})
    return _text(sampled), _text(elicited)


@pytest.mark.parametrize("transport", ["streamable", "sse"])
def test_the_sdk_clients_sampling_and_elicitation_callbacks_answer_a_member_through_a_virtual_server(
    gw: GatewayProcess, transport: str
) -> None:
    answers = Callbacks()

    async def run() -> tuple[str, str]:
        server: Any = sse_client(f"{gw.url}/servers/asks/sse") if transport == "sse" else f"{gw.url}/servers/asks/mcp"
        client = Client(
            server,
            mode="legacy",
            sampling_callback=answers.sampling,
            elicitation_callback=answers.elicitation,
        )
        async with client:
            with anyio.fail_after(20):
                return await _ask_both(client)

    sampled, elicited = anyio.run(run)
    assert answers.prompts == ["What is 2+2?"]
    assert answers.questions == ["Your name?"]
    assert sampled == "LLM response: four"
    assert elicited == 'User response: action=accept, content={"response":"Ada"}'
    assert "Traceback" not in gw.log_text()


def test_a_client_without_the_capabilities_keeps_getting_the_refusal(gw: GatewayProcess) -> None:
    async def run() -> tuple[str, str]:
        async with Client(f"{gw.url}/servers/asks/mcp", mode="legacy") as client:
            with anyio.fail_after(20):
                return await _ask_both(client)

    sampled, elicited = anyio.run(run)
    assert sampled.startswith("Sampling failed:") and "not relayed" in sampled, sampled
    assert elicited.startswith("Elicitation failed:") and "not relayed" in elicited, elicited
