"""The portal at /ui in headless Chromium against a real gateway (Debian's chromium, driven by Playwright).

One gateway (dev auth, local runtime, the example image from the catalog) serves the whole module so
the file stays under a minute and a half on the shared machine; the tests run in file order and the
later ones use the adapter the first one creates through the form. Screenshots of every page go to a
pytest temp dir and are copied to /tmp/portal-shots/ for people to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.auth import OidcServer
from tests.fixtures.gateway import GatewayProcess, start_gateway

if os.environ.get("CI"):  # installed by scripts/test.sh (the test extra): missing in CI is a failure
    import playwright.sync_api as playwright_sync
else:
    playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs Debian's chromium (scripts/test.sh installs it)"
)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS_FOR_PEOPLE = Path("/tmp/portal-shots")
ADAPTER = "portal-demo"
STATIC = Path(__file__).resolve().parents[2] / "gateway" / "ui" / "static"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with start_gateway(tmp_path_factory.mktemp("portal") / "data") as gw:
        yield gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("portal-shots")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"the page threw or broke its CSP: {errors}"


# page.wait_for_function takes "() => ..." here, never a bare expression: Playwright polls a bare
# expression with eval(), which the portal's CSP (script-src 'self') refuses, so such a wait passed
# only when its condition already held at the first check (checked 2026-11-30, Playwright + chromium).


def shot(page: Any, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SHOTS_FOR_PEOPLE.mkdir(exist_ok=True)
    shutil.copy(path, SHOTS_FOR_PEOPLE / path.name)


def test_portal_is_static_and_self_contained(gw: GatewayProcess) -> None:
    """Served at /ui/ from package files; nothing refers to another origin, so it works offline."""
    res = httpx.get(gw.url + "/ui/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="./app.js">' in res.text
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    assert res.headers["x-frame-options"] == "DENY" and res.headers["referrer-policy"] == "no-referrer"
    for f in STATIC.iterdir():
        text = f.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//|import[^;]*["']https?:|@import""", text), f.name
        assert httpx.get(f"{gw.url}/ui/{f.name}").status_code == 200


def test_adapter_created_through_the_form_becomes_ready(gw: GatewayProcess, page: Any, shots: Path) -> None:
    page.goto(gw.url + "/ui/")
    page.get_by_text("No adapters yet").wait_for()
    shot(page, shots, "01-adapters-empty")
    page.click("text=New adapter")
    page.fill("#f-name", ADAPTER)
    page.fill("#f-imageName", "mcp-example")
    page.fill("#f-imageVersion", "1.0.0")
    page.fill("#f-replicaCount", "1")
    page.fill("#f-description", "Created by the portal test")
    shot(page, shots, "02-create-form")
    page.click("text=Create adapter")
    page.wait_for_url(re.compile(rf"#/adapters/{ADAPTER}$"))
    page.locator("#conditions .chip.ok", has_text=re.compile("^Ready$")).wait_for(timeout=30_000)
    page.locator("#replicas", has_text="Running").wait_for()
    assert page.inner_text("#adapter-summary").count("mcp-example:1.0.0") == 1
    page.goto(gw.url + "/ui/#/adapters")
    row = page.locator(f"tr[data-adapter='{ADAPTER}']")
    row.locator(".ready-count", has_text="1/1").wait_for()
    assert "health-ready" in (row.get_attribute("class") or "")
    page.fill("#adapter-search", "no-such-thing")
    page.get_by_text("No adapter matches").wait_for()
    page.fill("#adapter-search", "portal")
    row.wait_for()
    shot(page, shots, "03-adapters-list")


def test_invalid_input_shows_the_error_under_the_field(gw: GatewayProcess, page: Any, shots: Path) -> None:
    """The schema's pattern catches a bad name before sending; the API's problem+json lands under its field."""
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(gw.url + "/ui/#/new-adapter")
    page.fill("#f-name", "Bad_Name")
    page.fill("#f-imageName", "mcp-example")
    page.fill("#f-imageVersion", "1.0.0")
    page.click("text=Create adapter")
    page.locator("#err-name", has_text="does not match").wait_for()
    assert page.get_attribute("#f-name", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "f-name"
    assert posts == []
    shot(page, shots, "04-form-invalid-name")
    # What only the server knows: the name is taken (409, field "name") ...
    page.fill("#f-name", ADAPTER)
    page.click("text=Create adapter")
    page.locator("#err-name", has_text="already exists").wait_for()
    # ... and a variable on the deny-list (400, field "environmentVariables.LD_PRELOAD").
    page.fill("#f-name", "portal-other")
    page.fill("#f-environmentVariables", "LD_PRELOAD=/tmp/x.so")
    page.click("text=Create adapter")
    page.locator("#err-environmentVariables", has_text="LD_PRELOAD").wait_for()
    assert page.inner_text("#err-name") == ""
    shot(page, shots, "05-form-server-error")
    assert httpx.get(gw.url + "/adapters/portal-other").status_code == 404


def test_server_json_import_shows_the_api_answer(gw: GatewayProcess, page: Any, tmp_path: Path) -> None:
    doc = tmp_path / "server.json"
    doc.write_text('{"name": "io.example/nothing", "version": "1.0.0"}')
    page.goto(gw.url + "/ui/#/new-adapter")
    page.set_input_files("#import-file", str(doc))
    # Either the gateway imports it (serverJson supported) and the page moves on, or its refusal shows.
    page.wait_for_function(
        "() => document.querySelector('#import-result .alert') !== null || !location.hash.endsWith('/new-adapter')"
    )
    if page.url.endswith("/new-adapter"):
        assert "refused" in page.inner_text("#import-result .alert")


def test_adapter_page_shows_conditions_replicas_and_logs(gw: GatewayProcess, page: Any, shots: Path) -> None:
    page.goto(f"{gw.url}/ui/#/adapters/{ADAPTER}")
    page.locator("#conditions", has_text="AllReplicasReady").wait_for()
    page.locator("#replicas td", has_text=f"{ADAPTER}-0").wait_for()
    page.locator("#logs", has_text="serving on").wait_for()
    mode = page.inner_text("#log-mode")
    assert mode in ("live", "refreshing every 2 s"), mode
    shot(page, shots, "06-adapter-page")
    # The replica writes: a spec change restarts it, and its new start line shows without a reload.
    with gw.client() as c:
        current = c.get(f"/adapters/{ADAPTER}")
        spec = {k: current.json()[k] for k in ("name", "imageName", "imageVersion", "replicaCount", "description")}
        spec["environmentVariables"] = {"PORTAL_TEST": "1"}
        assert c.put(f"/adapters/{ADAPTER}", json=spec, headers={"If-Match": current.headers["etag"]}).is_success
    page.locator("#logs", has_text="generation 2").wait_for(timeout=30_000)
    page.locator("#conditions .chip.ok", has_text=re.compile("^Ready$")).wait_for(timeout=30_000)
    assert page.inner_text("#log-mode") == mode


def test_console_calls_add_with_the_keyboard(gw: GatewayProcess, page: Any, shots: Path) -> None:
    page.goto(f"{gw.url}/ui/#/console/adapters/{ADAPTER}")
    page.locator("#console-info", has_text=f"Connected to {ADAPTER}").wait_for()
    page.focus("[data-tool='add']")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "arg-a"
    page.keyboard.type("2")
    page.keyboard.press("Tab")
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    page.locator("#tool-result .result-text", has_text=re.compile(r"^5$")).wait_for()
    shot(page, shots, "07-console-add")
    # A missing required argument is caught by the form generated from inputSchema.
    page.click("[data-tool='echo']")
    page.click("#call-tool")
    page.locator("#tool-form .error", has_text="text is required").wait_for()


POLICY_ADAPTER = "portal-policy"
# add for calc.user only; echo and whoami for every reader; get_env (it reads the replica's
# environment) granted to nobody, so only mcp.admin sees it.
TOOL_POLICY = [{"tools": ["add"], "roles": ["calc.user"]}, {"tools": ["echo", "whoami"], "roles": ["*"]}]


def console_tools(page: Any, gw: GatewayProcess, user: str, roles: str) -> list[str]:
    """Sign in through the dev switcher, open the console on the policy adapter, return the listed tools."""
    page.goto(gw.url + "/ui/#/signin")
    page.fill("#dev-user", user)
    page.fill("#dev-roles", roles)
    page.click("text=Use this identity")
    page.locator("#nav-identity", has_text=re.compile(rf"^User: {re.escape(user)}")).wait_for()
    page.goto(f"{gw.url}/ui/#/console/adapters/{POLICY_ADAPTER}")
    page.locator("#console-info", has_text=f"Connected to {POLICY_ADAPTER}").wait_for()
    page.locator("#console-tools [data-tool]").first.wait_for()
    return sorted(page.eval_on_selector_all("#console-tools [data-tool]", "els => els.map(e => e.dataset.tool)"))


def test_console_lists_only_the_tools_a_role_grants(gw: GatewayProcess, page: Any, shots: Path) -> None:
    """toolPolicy in the portal: one browser, two identities in turn; add shows only for calc.user.

    bob may use the adapter (he holds its requiredRoles role calc.reader) but not add; switching
    from alice to bob in the same page must not keep alice's tool list.
    """
    body = {
        "name": POLICY_ADAPTER,
        "imageName": "mcp-example",
        "imageVersion": "1.0.0",
        "replicaCount": 1,
        "requiredRoles": ["calc.reader"],
        "toolPolicy": TOOL_POLICY,
    }
    with gw.client() as c:
        created = c.post("/adapters", json=body)
        assert created.status_code == 201, created.text
    try:
        page.goto(f"{gw.url}/ui/#/adapters/{POLICY_ADAPTER}")
        policy = page.locator("#adapter-toolPolicy")
        policy.wait_for()
        text = policy.inner_text()
        assert "Tool policy" in text and "calc.user" in text and "whoami" in text, text
        page.locator("#conditions .chip.ok", has_text=re.compile("^Ready$")).wait_for(timeout=30_000)
        shot(page, shots, "08a-adapter-tool-policy")

        assert console_tools(page, gw, "alice", "calc.reader, calc.user") == ["add", "echo", "whoami"]
        page.click("[data-tool='add']")
        page.fill("#arg-a", "2")
        page.fill("#arg-b", "3")
        page.click("#call-tool")
        page.locator("#tool-result .result-text", has_text=re.compile(r"^5$")).wait_for()

        assert console_tools(page, gw, "bob", "calc.reader") == ["echo", "whoami"]
        assert page.locator("#console-tools", has_text="Tools (2)").count() == 1
        shot(page, shots, "08b-console-without-role")
        # The list is the convenience; the gateway refuses the call itself (docs/policy.md).
        with gw.client("bob", "calc.reader") as c:
            denied = c.post(
                f"/adapters/{POLICY_ADAPTER}/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "add", "arguments": {"a": 2, "b": 3}},
                },
                headers={
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2026-07-28",
                    "Mcp-Method": "tools/call",
                    "Mcp-Name": "add",
                },
            )
        assert denied.status_code == 403 and denied.json()["error"]["code"] == -32006, denied.text

        # mcp.admin sees everything, get_env included.
        assert console_tools(page, gw, "root", "mcp.admin") == ["add", "echo", "get_env", "whoami"]
    finally:
        with gw.client() as c:
            c.delete(f"/adapters/{POLICY_ADAPTER}")


def test_virtual_server_page_shows_members_and_merged_tools(gw: GatewayProcess, page: Any, shots: Path) -> None:
    """The /servers tab and page (the portal feature-detects the resource; this gateway has it)."""
    with gw.client() as c:
        assert c.get("/servers").status_code == 200
        body = {"name": "portal-vs", "description": "Portal test", "members": [{"adapter": ADAPTER, "prefix": "demo_"}]}
        assert c.post("/servers", json=body).status_code == 201
    try:
        page.goto(gw.url + "/ui/#/servers")
        page.click("text=portal-vs")
        page.locator(f"#members tr[data-member='{ADAPTER}'] .chip.ok").wait_for()
        page.locator("#members-summary", has_text="1 present · 0 missing").wait_for()
        page.locator("#server-tools code", has_text="demo_add").wait_for()
        assert not page.is_hidden("#nav-servers")
        shot(page, shots, "08-virtual-server")
        page.click("text=Open in console")
        page.click("[data-tool='demo_add']")
        page.fill("#arg-a", "2")
        page.fill("#arg-b", "3")
        page.click("#call-tool")
        page.locator("#tool-result .result-text", has_text=re.compile(r"^5$")).wait_for()
    finally:
        with gw.client() as c:
            c.delete("/servers/portal-vs")


def test_another_user_does_not_see_the_adapter(gw: GatewayProcess, page: Any, shots: Path) -> None:
    """The dev identity switcher: a user who did not create it (and has no role) sees nothing to use."""
    page.goto(gw.url + "/ui/#/signin")
    page.fill("#dev-user", "mallory")
    page.fill("#dev-roles", "")
    shot(page, shots, "09-dev-signin")
    page.click("text=Use this identity")
    page.get_by_text("No adapters yet, or none you may see").wait_for()
    assert page.inner_text("#nav-identity") == "User: mallory"
    page.goto(gw.url + "/ui/#/console")
    page.get_by_text("There is nothing to connect to yet").wait_for()
    page.goto(f"{gw.url}/ui/#/adapters/{ADAPTER}")
    page.locator(".alert", has_text="do not have access").wait_for()
    shot(page, shots, "10-forbidden")


def test_phone_layout_has_no_sideways_scroll(gw: GatewayProcess, browser: Any, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        pg = context.new_page()
        pg.goto(gw.url + "/ui/")
        pg.locator(f"tr[data-adapter='{ADAPTER}']").wait_for(timeout=20_000)
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        shot(pg, shots, "11-phone-adapters")
        pg.goto(f"{gw.url}/ui/#/adapters/{ADAPTER}")
        pg.locator("#logs", has_text="serving on").wait_for(timeout=20_000)
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        shot(pg, shots, "11-phone-adapter-page")
    finally:
        context.close()


def test_virtual_servers_tab_follows_the_api(gw: GatewayProcess, page: Any) -> None:
    page.goto(gw.url + "/ui/")
    page.locator("#adapter-list table, #adapter-list .empty").first.wait_for()
    has_servers = httpx.get(gw.url + "/servers").status_code not in (404, 405)
    page.wait_for_function(
        "() => document.getElementById('nav-servers').hidden === " + ("false" if has_servers else "true")
    )


def test_edit_form_saves_with_the_etag(gw: GatewayProcess, page: Any, shots: Path) -> None:
    page.goto(f"{gw.url}/ui/#/adapters/{ADAPTER}/edit")
    page.locator("#f-description").wait_for()
    assert page.is_disabled("#f-name") and page.input_value("#f-name") == ADAPTER
    edited = "Edited in the portal <img src=x onerror=window.pwned=1>"
    page.fill("#f-description", edited)
    shot(page, shots, "12-edit-form")
    page.click("text=Save changes")
    page.wait_for_url(re.compile(rf"#/adapters/{ADAPTER}$"))
    page.get_by_text(edited).wait_for()  # shown as text, never parsed as HTML
    assert page.evaluate("window.pwned") is None
    assert httpx.get(f"{gw.url}/adapters/{ADAPTER}").json()["description"] == edited


def test_delete_from_the_adapter_page(gw: GatewayProcess, page: Any) -> None:
    page.goto(f"{gw.url}/ui/#/adapters/{ADAPTER}")
    page.locator("#conditions").wait_for()
    page.once("dialog", lambda d: d.accept())
    page.click("button.danger")
    page.wait_for_url(re.compile(r"#/adapters$"))
    page.get_by_text("No adapters yet").wait_for()
    assert httpx.get(f"{gw.url}/adapters/{ADAPTER}").status_code == 404


def test_oidc_sign_in_with_code_and_pkce(
    tmp_path: Path,
    browser: Any,
    oidc_server: OidcServer,
    shots: Path,
) -> None:
    """The issuer comes from the RFC 9728 metadata; the token stays in memory and goes out as a bearer."""
    env = {
        "MCPGW_AUTH": "oidc",
        "MCPGW_OIDC_ISSUER": oidc_server.oidc_issuer,
        "MCPGW_OIDC_AUDIENCE": "portal-client",
    }
    with start_gateway(tmp_path / "data", env) as gw:
        context = browser.new_context()
        try:
            pg = context.new_page()
            pg.set_default_timeout(20_000)
            blocked: list[str] = []
            pg.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
            pg.goto(gw.url + "/ui/")
            pg.wait_for_url(re.compile("#/signin$"))
            pg.get_by_text(oidc_server.oidc_issuer).wait_for()
            pg.fill("#client-id", "portal-client")
            shot(pg, shots, "13-oidc-signin")
            pg.click("#sign-in")
            pg.wait_for_url(re.compile(r"/ui/#/signin$"))
            pg.get_by_text("Signed in as browser-user@example.test").wait_for()
            shot(pg, shots, "14-oidc-signed-in")
            assert "code=" not in pg.url
            authorize = [q for m, p, q in oidc_server.requests if p.endswith("/authorize")]
            assert authorize[-1]["code_challenge_method"] == "S256" and authorize[-1]["client_id"] == "portal-client"
            bearer: list[str] = []
            pg.on(
                "request",
                lambda r: bearer.append(r.headers.get("authorization", "")) if "/adapters" in r.url else None,
            )
            pg.click("text=Adapters")
            pg.get_by_text("No adapters yet").wait_for()
            assert bearer and all(b.startswith("Bearer ") for b in bearer)
            assert pg.evaluate("document.cookie") == ""
            assert not blocked, blocked
            assert pg.evaluate("JSON.stringify(Object.keys(localStorage))") == '["mcpgw.client-id"]'
        finally:
            context.close()
