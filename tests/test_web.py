"""``omniops web`` in a real browser: Debian's chromium, headless, driven by Playwright.

The server runs in the test's event loop (so a test can await a session's end); every
browser session starts a real ``omniops console`` process on a small fixture store.
textual-serve draws into a canvas, so the screen is read from xterm.js's buffer: the test
route serves textual-serve's own ``textual.js`` with one line added that keeps a handle on
the terminal (``window.omniopsTerminals``).  The browser may talk to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import textual_serve
from pydantic import ValidationError

from console.app import WIDE_COLUMNS
from console.cli import console_command
from feeds.runtime.web import RunningWeb, WebConsoleServer, WebSession, start_web
from feeds.runtime.web_config import WebConfig, WebConfigError, load_web_config
from rules.engine import AlertEngine
from rules.file import load_rules
from rules.identity import WEB_USER_ENV, console_permissions
from rules.roles import Roles, current_user
from store import alerts as alert_store
from store.clock import FixedClock
from tests import builders as b
from tests.conftest import write
from tests.snapshot_factory import AS_OF, build_snapshots

CHROMIUM = os.environ.get("OMNIOPS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
TOKENS = {
    "vera": "vera-token-0123456789abcdef",  # a viewer (not listed in [roles])
    "olga": "olga-token-0123456789abcdef",  # an operator
    "erin": "erin-token-0123456789abcdef",  # an editor
}
RULES = """\
[[alert]]
id = "late_orders"
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 5
for = "0s"
severity = "critical"
no_data = "ok"

[notify.route]
receiver = "console"
"""
TIMEOUT_MS = 30_000

# One chromium for the module: the async tests and their fixtures share the module's event
# loop (Playwright's browser belongs to the loop that launched it); every test still gets its
# own browser contexts (cookies, pages), closed when it ends.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

SCREEN_JS = """() => {
  const ts = window.omniopsTerminals;
  if (!ts || !ts.length) return "";
  const t = ts[0].terminal, buf = t.buffer.active, out = [];
  for (let i = 0; i < t.rows; i++) {
    const line = buf.getLine(buf.viewportY + i);
    out.push(line ? line.translateToString(true) : "");
  }
  return out.join("\\n");
}"""


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set OMNIOPS_CHROMIUM)"
    return None


def need_browser() -> None:
    """Skip on a dev machine without chromium; in CI (CI=true) a missing browser fails."""
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the browser tests: {missing}")
    pytest.skip(missing)


# -- fixtures ----------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def fixture_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small store: a few SKUs and locations, late orders, an out-of-stock pair, an alert."""
    db = tmp_path / "store.db"
    events = [
        b.location("WH-TX", kind="warehouse"),
        b.location("ST-NYC"),
        b.sku("TEE-RED", reorder=10),
        b.sku("MUG-BLUE", category="home", reorder=5),
        b.snapshot("TEE-RED", "WH-TX", 0, b.at(-2)),
        b.snapshot("MUG-BLUE", "ST-NYC", 40, b.at(-2)),
    ]
    events += [
        b.order(f"o-{i}", b.at(-30 - i), [("MUG-BLUE", 1)], loc="WH-TX", promised=b.at(-29))
        for i in range(3)
    ]
    await write(db, events)
    rules = Path(os.environ["OMNIOPS_RULES"])
    rules.write_text(RULES)
    # an alert firing in the store, as the alert loop of `omniops serve` would have written
    engine = AlertEngine(
        load_rules(rules).rules, lambda: alert_store.connect(db, create=True), FixedClock(AS_OF)
    )
    engine.evaluate(build_snapshots())
    engine.close()
    config = Path(os.environ["OMNIOPS_CONFIG"])
    config.write_text(
        "[roles]\n"
        f'editors = ["{current_user()}", "erin"]\n'
        'operators = ["olga"]\n'
        "[web]\n"
        "users = { " + ", ".join(f'{u} = "$OMNIOPS_WEB_TOKEN_{u.upper()}"' for u in TOKENS) + " }\n"
    )
    for user, token in TOKENS.items():
        monkeypatch.setenv(f"OMNIOPS_WEB_TOKEN_{user.upper()}", token)
    return db


StartWeb = Callable[..., Awaitable[RunningWeb]]


@pytest_asyncio.fixture(loop_scope="module")
async def start(fixture_store: Path) -> AsyncIterator[StartWeb]:
    """Start ``omniops web`` on the fixture store (options as keyword overrides)."""
    running: list[RunningWeb] = []

    async def _start(**overrides: Any) -> RunningWeb:
        config = load_web_config(db=fixture_store, port=0, **overrides)
        server = WebConsoleServer(config, config.tokens(), console_command(fixture_store))
        web = await start_web(server)
        running.append(web)
        return web

    yield _start
    for web in running:
        await web.stop()
        assert not web.server.sessions, "every console process ends with the server"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_browser() -> AsyncIterator[Any]:
    """Chromium, launched once for the module's browser tests."""
    need_browser()
    from playwright.async_api import async_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root otherwise
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(shared_browser: Any) -> AsyncIterator[Any]:
    """The module's chromium; the contexts a test opens are closed when it ends."""
    assert not shared_browser.contexts, "a previous test left a browser context open"
    yield shared_browser
    for context in list(shared_browser.contexts):
        await context.close()


def _patched_textual_js() -> str:
    source = (Path(textual_serve.__file__).parent / "static/js/textual.js").read_text()
    hook = "const t=new w(e,{ping:r});"
    assert hook in source, "textual-serve's front end changed: update the terminal hook"
    keep = "window.omniopsTerminals=(window.omniopsTerminals||[]).concat([t]);"
    return source.replace(hook, hook + keep)


TEXTUAL_JS = _patched_textual_js()


async def new_page(browser: Any, *, phone: bool = False) -> Any:
    """A page in a fresh context (own cookies), with only 127.0.0.1 reachable."""
    if phone:
        context = await browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
    else:
        context = await browser.new_context(viewport={"width": 1600, "height": 900})

    async def route(request_route: Any) -> None:
        url = request_route.request.url
        if not url.startswith(("http://127.0.0.1", "ws://127.0.0.1")):
            await request_route.abort()
        elif url.split("?")[0].endswith("/static/js/textual.js"):
            await request_route.fulfill(body=TEXTUAL_JS, content_type="application/javascript")
        else:
            await request_route.continue_()

    await context.route("**/*", route)
    return await context.new_page()


async def screen(page: Any) -> str:
    """The terminal's visible text."""
    return str(await page.evaluate(SCREEN_JS))


async def wait_for_screen(page: Any, *words: str, absent: tuple[str, ...] = ()) -> str:
    """Await until every word is on the screen and none of ``absent`` is; the screen text."""
    predicate = (
        f"([words, absent]) => {{ const s = ({SCREEN_JS})(); "
        "return words.every(w => s.includes(w)) && !absent.some(w => s.includes(w)); }"
    )
    try:
        await page.wait_for_function(predicate, arg=[list(words), list(absent)], timeout=TIMEOUT_MS)
    except Exception as exc:
        text = await screen(page)
        raise AssertionError(f"screen lacks {words} (or shows {absent}):\n{text}") from exc
    return await screen(page)


async def press(page: Any, *keys: str) -> None:
    """Type keys into the terminal (focus its input, never click: a click selects a row)."""
    await page.focus(".xterm-helper-textarea")
    for key in keys:
        await page.keyboard.press(key)


async def open_console(browser: Any, web: RunningWeb, user: str, **kw: Any) -> Any:
    page = await new_page(browser, **kw)
    response = await page.goto(f"{web.url}/?token={TOKENS[user]}")
    assert response is not None and response.status == 200
    assert "token" not in page.url, "the token is dropped from the address bar"
    await wait_for_screen(page, "Fulfillment", "Stock", "Returns")
    return page


def session_of(web: RunningWeb, user: str) -> WebSession:
    [session] = [s for s in web.server.sessions.values() if s.user == user]
    return session


async def ended(session: WebSession) -> None:
    await asyncio.wait_for(session.ended.wait(), 30)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- access ------------------------------------------------------------------------------------


@on_module_loop
async def test_without_a_valid_token_the_page_and_the_websocket_are_refused(
    start: StartWeb, browser: Any
) -> None:
    web = await start()
    page = await new_page(browser)
    for url in (f"{web.url}/", f"{web.url}/?token=not-anyones-token-000000"):
        response = await page.goto(url)
        assert response is not None and response.status == 401
        assert "token" in await page.inner_text("body")
    async with aiohttp.ClientSession() as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0000000000000"},
            {"Cookie": "omniops_web=forged-ticket"},
            # a valid token from a foreign page (cross-site websocket hijacking)
            {"Authorization": f"Bearer {TOKENS['erin']}", "Origin": "http://evil.example"},
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(f"{web.url}/ws", headers=headers)
            assert refused.value.status == 401
    assert web.server.consoles_started == 0
    assert not web.server.sessions


@on_module_loop
async def test_the_console_renders_the_panels_and_keys_switch_tabs(
    start: StartWeb, browser: Any
) -> None:
    web = await start()
    page = await open_console(browser, web, "erin")
    text = await wait_for_screen(page, "WH-TX", "TEE-RED", "Pick50/90")  # the full layout
    assert "1 Overview" in text and "2 Fulfillment" in text
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "web-console-desktop.png"))

    await press(page, "2")  # the fulfillment tab: the other panels are gone
    await wait_for_screen(page, "Fulfillment", "Pick50/90", absent=("TEE-RED", "SPIKE"))
    await press(page, "3")
    await wait_for_screen(page, "TEE-RED", absent=("Pick50/90",))
    session = session_of(web, "erin")
    assert session.console is not None and session.console.process is not None


@on_module_loop
async def test_a_phone_sized_window_gets_the_compact_layout(start: StartWeb, browser: Any) -> None:
    web = await start()
    page = await open_console(browser, web, "olga", phone=True)
    cols = await page.evaluate("() => window.omniopsTerminals[0].terminal.cols")
    assert cols < WIDE_COLUMNS
    text = await wait_for_screen(page, "WH-TX", absent=("Pick50/90",))
    assert all(len(line) <= cols for line in text.splitlines())
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "web-console-phone.png"))


# -- roles -------------------------------------------------------------------------------------


@on_module_loop
async def test_a_viewer_cannot_acknowledge_an_alert_or_save_a_rule(
    start: StartWeb, browser: Any, fixture_store: Path
) -> None:
    web = await start()
    rules = Path(os.environ["OMNIOPS_RULES"])
    before = rules.read_text()
    page = await open_console(browser, web, "vera")
    await press(page, "a")  # the alerts view
    await wait_for_screen(page, "late_orders", "WH-TX")
    await press(page, "a")  # acknowledge
    await wait_for_screen(page, "NOT ALLOWED: vera is a viewer")
    await press(page, "Escape")  # (a key right after escape would read as alt+key)
    await wait_for_screen(page, "1 Overview")
    await press(page, "t")  # the rules view
    await wait_for_screen(page, "vera (read-only)")
    await press(page, "n")
    await wait_for_screen(page, "NOT ALLOWED: vera is a viewer; editing rules needs the editor")
    await press(page, "Enter")  # the rule, read-only; saving is refused too
    # F2 before the form is up reaches the list and is lost (seen on a loaded machine)
    await wait_for_screen(page, "Alert rule late_orders  (read-only)")
    await press(page, "F2")
    await wait_for_screen(page, "NOT SAVED: vera is a viewer")
    conn = alert_store.connect(fixture_store)
    try:
        [alert] = alert_store.list_alerts(conn)
    finally:
        conn.close()
    assert alert.acked_by is None
    assert rules.read_text() == before


@on_module_loop
async def test_an_operator_acknowledges_under_their_web_name(
    start: StartWeb, browser: Any, fixture_store: Path
) -> None:
    web = await start()
    page = await open_console(browser, web, "olga")
    await press(page, "a")
    await wait_for_screen(page, "late_orders", "WH-TX")
    await press(page, "a")
    await wait_for_screen(page, "Enter acknowledges")
    await press(page, *"on it", "Enter")
    # another process writes the store: poll it, bounded
    for _ in range(300):
        conn = alert_store.connect(fixture_store)
        try:
            [alert] = alert_store.list_alerts(conn)
        finally:
            conn.close()
        if alert.acked_by is not None:
            break
        await asyncio.sleep(0.1)
    assert alert.acked_by == "olga"
    assert alert.ack_comment == "on it"


# -- limits ------------------------------------------------------------------------------------


@on_module_loop
async def test_closing_the_page_ends_its_console_process(start: StartWeb, browser: Any) -> None:
    web = await start()
    page = await open_console(browser, web, "erin")
    session = session_of(web, "erin")
    assert session.console is not None and session.console.process is not None
    process = session.console.process
    assert process.returncode is None
    await page.context.close()
    await ended(session)
    assert process.returncode is not None
    assert _gone(process.pid), "the console process is reaped"
    assert not web.server.sessions


@on_module_loop
async def test_the_session_limit_is_enforced(start: StartWeb, browser: Any) -> None:
    web = await start(max_sessions=2)
    first = await open_console(browser, web, "erin")
    await open_console(browser, web, "olga")
    third = await new_page(browser)
    response = await third.goto(f"{web.url}/?token={TOKENS['vera']}")
    assert response is not None and response.status == 503
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(
                f"{web.url}/ws", headers={"Authorization": f"Bearer {TOKENS['vera']}"}
            )
        assert refused.value.status == 503
    assert web.server.consoles_started == 2
    session = session_of(web, "erin")
    await first.context.close()
    await ended(session)
    await open_console(browser, web, "vera")  # a slot is free again
    assert web.server.consoles_started == 3


@on_module_loop
async def test_an_idle_session_is_closed_and_its_process_ends(
    start: StartWeb, browser: Any
) -> None:
    web = await start(idle_timeout_minutes=0.05)  # 3 s: shorter than a slow console start
    page = await new_page(browser)
    response = await page.goto(f"{web.url}/?token={TOKENS['erin']}")
    assert response is not None and response.status == 200
    # nobody types: the server closes the session, and the page says so
    await page.wait_for_function("document.body.classList.contains('-closed')", timeout=TIMEOUT_MS)
    assert "Session ended" in await page.inner_text("body")
    # (the page may learn of the close before the server has reaped the process)
    [session] = [*web.server.sessions.values(), *web.server.ended_sessions]
    await ended(session)
    assert session.closed_for == "idle"
    assert session.console is not None and session.console.process is not None
    process = session.console.process
    assert process.returncode is not None and _gone(process.pid)
    assert not web.server.sessions


# -- configuration and identity (no browser) --------------------------------------------------


def test_tokens_come_only_from_the_environment_and_are_never_empty() -> None:
    config = WebConfig(users={"ana": "$OMNIOPS_WEB_TOKEN_ANA"})
    with pytest.raises(WebConfigError, match="is not set"):
        config.tokens({})
    with pytest.raises(WebConfigError, match="empty"):
        config.tokens({"OMNIOPS_WEB_TOKEN_ANA": ""})
    with pytest.raises(WebConfigError, match="at least 16"):
        config.tokens({"OMNIOPS_WEB_TOKEN_ANA": "short"})
    assert config.tokens({"OMNIOPS_WEB_TOKEN_ANA": "x" * 16})["ana"].get_secret_value() == "x" * 16
    with pytest.raises(WebConfigError, match="nobody could log in"):
        WebConfig().tokens({})
    with pytest.raises(ValidationError, match="name of an environment variable"):
        WebConfig(users={"ana": "s3cr3t token in the file"})
    shared = WebConfig(users={"ana": "$A", "bo": "$B"})
    with pytest.raises(WebConfigError, match="same token as ana"):
        shared.tokens({"A": "t" * 20, "B": "t" * 20})


def test_an_empty_token_stops_omniops_web_from_starting(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[web]\nusers = { ana = "$OMNIOPS_WEB_TOKEN_ANA" }\n')
    db = tmp_path / "s.db"
    db.touch()
    env = {**os.environ, "OMNIOPS_CONFIG": str(config), "OMNIOPS_WEB_TOKEN_ANA": ""}
    result = subprocess.run(
        [sys.executable, "-m", "console.cli", "web", "--db", str(db), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "web.users.ana: $OMNIOPS_WEB_TOKEN_ANA is empty" in result.stderr


def test_the_web_user_role_is_looked_up_like_an_ssh_login_and_never_raised() -> None:
    roles = Roles(editors=("svc", "erin"), operators=("olga",))
    as_web = console_permissions(roles, environ={WEB_USER_ENV: "olga"}, os_user="svc")
    assert (as_web.user, as_web.role) == ("olga", "operator")
    assert console_permissions(roles, environ={WEB_USER_ENV: "vera"}, os_user="svc").role == (
        "viewer"
    )
    # a viewer's shell cannot claim to be an editor: the OS user's role caps it
    claimed = console_permissions(roles, environ={WEB_USER_ENV: "erin"}, os_user="mallory")
    assert (claimed.user, claimed.role) == ("erin", "viewer")
    assert console_permissions(roles, environ={}, os_user="erin").role == "editor"
    read_only = console_permissions(
        roles, read_only=True, environ={WEB_USER_ENV: "erin"}, os_user="svc"
    )
    assert not read_only.can_edit_rules
