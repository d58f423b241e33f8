"""``omniops web``: the console in a browser, one console process per browser session.

Built on textual-serve (its page, its xterm.js front end and its process protocol), with
what it leaves out added around it:

* **Access.**  The page, the websocket and downloads need a credential: a user's token
  (``Authorization: Bearer <token>``, or ``?token=`` once, which is swapped for a session
  cookie and dropped from the address bar), or the ``HttpOnly``/``SameSite=Strict``
  session cookie that first check set.  Wrong or missing: 401 and no process.
* **Identity.**  Each console process is started with ``OMNIOPS_WEB_USER`` naming the web
  user, so it acts with that user's role from ``[roles]`` (see :mod:`rules.identity`).
* **Limits.**  At most ``max_sessions`` consoles at once (503 beyond, checked before a
  process starts); a session with no input for ``idle_timeout_minutes`` is closed; a
  closed tab (websocket closed) ends its process: asked to quit, then terminated, then
  killed, and always reaped.

The command that starts a console is given by the caller (``console.cli`` wires
``omniops console --db DB``): this module opens sockets and spawns processes, and knows
nothing of the console itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import signal
import ssl
import sys
from argparse import Namespace
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import WSMsgType, web
from pydantic import SecretStr, ValidationError
from textual_serve.app_service import AppService
from textual_serve.server import Server

from feeds.runtime.logs import log_to_stderr
from feeds.runtime.web_config import WebConfig, WebConfigError, load_web_config
from rules.identity import WEB_USER_ENV, capped_users

log = logging.getLogger("omniops.web")

COOKIE = "omniops_web"
"""Name of the session cookie set after a successful token check."""
TEMPLATES = Path(__file__).with_name("web_templates")
IDLE_CLOSE_CODE = 4000
"""Websocket close code of a session closed for being idle."""
STOP_GRACE_SECONDS = 5.0
"""How long a console may take to quit before it is terminated (then killed)."""


def ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """An HTTPS server context when a certificate and key are configured."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both tls_cert and tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _to_int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(text))) if text is not None else default
    except ValueError:
        return default


class ConsoleProcess(AppService):
    """One browser session's console: textual-serve's app service, exec'd and reaped.

    The command is an argument list run without a shell (no quoting of store paths);
    ``environment`` is added to the inherited one (the web user, above all).
    """

    def __init__(
        self, argv: Sequence[str], *, environment: Mapping[str, str], **kwargs: Any
    ) -> None:
        super().__init__(" ".join(argv), **kwargs)
        self.argv = list(argv)
        self.extra_environment = dict(environment)

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The running (or finished) console process."""
        return self._process

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        environment = super()._build_environment(width, height)
        environment.update(self.extra_environment)
        return environment

    async def _open_app_process(
        self, width: int = 80, height: int = 24
    ) -> asyncio.subprocess.Process:
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._build_environment(width, height),
        )
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def stop(self) -> None:
        """Ask the console to quit; terminate, then kill it if it does not; reap it."""
        task, self._task = self._task, None
        process = self._process
        if task is None or process is None:
            return
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        with contextlib.suppress(Exception):  # the process may have gone already
            await self.send_meta({"type": "quit"})
        for escalate in (process.terminate, process.kill):
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_SECONDS)
                break
            except TimeoutError:
                log.warning("console pid %s did not quit; %s", process.pid, escalate.__name__)
                with contextlib.suppress(ProcessLookupError):
                    escalate()
        await process.wait()
        await task  # its stdout reader ends at the process's end of file


@dataclass
class WebSession:
    """One browser session: who, its console, and when it was last used."""

    id: str
    user: str
    last_active: float
    console: ConsoleProcess | None = None
    closed_for: str | None = None
    """Why the server closed it (``"idle"``), or None."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once its console process has ended and been reaped."""


@dataclass
class _Ticket:
    user: str
    expires: float


class WebConsoleServer(Server):
    """textual-serve's server with tokens, per-user identity, session limits and idling.

    Args:
        config: The ``[web]`` configuration.
        tokens: Each user's token (from :meth:`WebConfig.tokens`).
        command: The argument list that starts one console (``omniops console --db ...``).
    """

    def __init__(
        self, config: WebConfig, tokens: Mapping[str, SecretStr], command: Sequence[str]
    ) -> None:
        super().__init__(
            " ".join(command),
            host=config.host,
            port=config.port,
            title="omniops",
            public_url=config.public_url,
            templates_path=TEMPLATES,
        )
        if not tokens:
            raise ValueError("no web users: nobody could log in")
        self.config = config
        self.argv = list(command)
        self._tokens = dict(tokens)
        self._tickets: dict[str, _Ticket] = {}
        self.sessions: dict[str, WebSession] = {}
        """Sessions whose console is starting or running, by id."""
        self.refused = 0
        """Requests answered 401 or 503 (for the log and the tests)."""
        self.consoles_started = 0
        """Console processes started since the server began."""
        self.ended_sessions: deque[WebSession] = deque(maxlen=100)
        """The latest sessions that ended, newest last (who, why, their process)."""

    # -- credentials ---------------------------------------------------------------------------

    def _user_of_token(self, token: str) -> str | None:
        found = None
        for user, secret in self._tokens.items():  # compare with every one: constant time
            if hmac.compare_digest(secret.get_secret_value().encode(), token.encode()):
                found = user
        return found

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _user_of_ticket(self, ticket: str) -> str | None:
        entry = self._tickets.get(ticket)
        if entry is None or entry.expires <= self._now():
            self._tickets.pop(ticket, None)
            return None
        return entry.user if entry.user in self._tokens else None

    def _presented_token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.query.get("token")

    def authenticate(self, request: web.Request) -> tuple[str, bool] | None:
        """``(user, by_token)`` for a valid token or session cookie, else None."""
        token = self._presented_token(request)
        if token:  # a token given is checked even when a cookie is there too
            user = self._user_of_token(token)
            return None if user is None else (user, True)
        ticket = request.cookies.get(COOKIE)
        if ticket:
            user = self._user_of_ticket(ticket)
            return None if user is None else (user, False)
        return None

    def _issue_ticket(self, user: str) -> str:
        now = self._now()
        for key in [k for k, t in self._tickets.items() if t.expires <= now]:
            del self._tickets[key]
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = _Ticket(user, now + self.config.login_hours * 3600)
        return ticket

    def _refuse(self, status: int, text: str) -> web.Response:
        self.refused += 1
        headers = {"WWW-Authenticate": 'Bearer realm="omniops"'} if status == 401 else {}
        return web.Response(status=status, text=text + "\n", headers=headers)

    def _unauthorised(self) -> web.Response:
        return self._refuse(
            401,
            "401 Unauthorized: open this page with ?token=<your token> (or send "
            "Authorization: Bearer <token>); tokens are set per user in the [web] config",
        )

    def _full(self) -> web.Response:
        return self._refuse(
            503,
            f"503: all {self.config.max_sessions} console sessions are in use; "
            "close one or try again later",
        )

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser: the credential is all there is to check
            return True
        expected = urlsplit(self.config.public_url).netloc if self.config.public_url else None
        return urlsplit(origin).netloc == (expected or request.host)

    # -- the aiohttp application ---------------------------------------------------------------

    async def _make_app(self) -> web.Application:
        app = web.Application()
        aiohttp_jinja2.setup(app, loader=_loader(self.templates_path))
        app.add_routes(
            [
                web.get("/", self.handle_index, name="index"),
                web.get("/ws", self.handle_websocket, name="websocket"),
                web.get("/download/{key}", self.handle_download, name="download"),
                web.static("/static", self.statics_path, name="static"),
            ]
        )
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def make_app(self) -> web.Application:
        """The aiohttp application (for :class:`aiohttp.web.AppRunner`)."""
        return await self._make_app()

    async def on_startup(self, app: web.Application) -> None:
        """Log what is served (textual-serve prints a banner instead)."""
        log.info("omniops web: %s", self.config.describe())

    async def on_shutdown(self, app: web.Application) -> None:
        """Close every session; each console is asked to quit and reaped."""
        await asyncio.gather(*(self.close_session(s) for s in list(self.sessions.values())))

    def _base_url(self, request: web.Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        """The page: 401 without a credential, 503 when full, else the terminal page."""
        who = self.authenticate(request)
        if who is None:
            return self._unauthorised()
        user, by_token = who
        if len(self.sessions) >= self.config.max_sessions:
            return self._full()
        ticket = self._issue_ticket(user) if by_token else None
        if ticket is not None and "token" in request.query:
            # keep the token out of the address bar and history: the cookie carries on
            query = {k: v for k, v in request.query.items() if k != "token"}
            response: web.StreamResponse = web.Response(
                status=303, headers={"Location": request.rel_url.with_query(query).path_qs}
            )
        else:
            base = self._base_url(request)
            scheme, _, rest = base.partition(":")
            ws_scheme = "wss" if scheme == "https" else "ws"
            size = _to_int(request.query.get("fontsize"), self.config.font_size, 6, 48)
            context = {
                "font_size": size,
                "app_websocket_url": f"{ws_scheme}:{rest}/ws",
                "config": {"static": {"url": f"{base}/static/"}},
                "application": {"name": f"omniops · {user}"},
                "ended_hint": (
                    f"Sessions close after {self.config.idle_timeout_minutes:g} min "
                    "without input, and when the console quits."
                ),
            }
            response = aiohttp_jinja2.render_template("app_index.html", request, context)
            response.headers["Cache-Control"] = "no-store"
        if ticket is not None:
            response.set_cookie(
                COOKIE,
                ticket,
                max_age=int(self.config.login_hours * 3600),
                httponly=True,
                samesite="Strict",
                secure=request.secure or self._base_url(request).startswith("https"),
            )
        return response

    async def handle_download(self, request: web.Request) -> web.StreamResponse:
        """A file the console delivers: for a logged-in user only."""
        if self.authenticate(request) is None:
            return self._unauthorised()
        return await super().handle_download(request)

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
        """Check the credential and the limit, then run one console for this websocket."""
        who = self.authenticate(request)
        if who is None or not self._origin_ok(request):
            return self._unauthorised()
        if len(self.sessions) >= self.config.max_sessions:
            return self._full()
        now = self._now()
        session = WebSession(id=secrets.token_hex(8), user=who[0], last_active=now)
        self.sessions[session.id] = session  # no await since the check: no race past the limit
        websocket = web.WebSocketResponse(heartbeat=15)
        watchdog: asyncio.Task[None] | None = None
        try:
            await websocket.prepare(request)
            width = _to_int(request.query.get("width"), 80, 10, 1000)
            height = _to_int(request.query.get("height"), 24, 5, 500)
            console = session.console = ConsoleProcess(
                self.argv,
                environment={WEB_USER_ENV: session.user},
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=websocket.close,
                download_manager=self.download_manager,
            )
            await console.start(width, height)
            self.consoles_started += 1
            log.info(
                "session %s: %s started console pid %s",
                session.id,
                session.user,
                console.process.pid if console.process else "?",
            )
            watchdog = asyncio.create_task(self._close_when_idle(session, websocket))
            await self._pump(websocket, session)
        except asyncio.CancelledError:
            await websocket.close()
        except Exception:
            log.exception("session %s failed", session.id)
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            await self.close_session(session)
        return websocket

    async def _pump(self, websocket: web.WebSocketResponse, session: WebSession) -> None:
        """Browser → console: keys, resizes, focus; pings are answered and are not input."""
        console = session.console
        assert console is not None
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                envelope = json.loads(message.data)
                kind = envelope[0]
                data = envelope[1] if len(envelope) > 1 else None
            except (ValueError, TypeError, IndexError, KeyError):
                continue  # not textual-serve's front end: ignore, never crash the session
            if kind == "ping":
                await websocket.send_json(["pong", data])
                continue
            session.last_active = self._now()
            if kind == "stdin" and isinstance(data, str):
                await console.send_bytes(data.encode("utf-8"))
            elif kind == "resize" and isinstance(data, dict):
                width = _to_int(str(data.get("width")), 80, 10, 1000)
                height = _to_int(str(data.get("height")), 24, 5, 500)
                await console.set_terminal_size(width, height)
            elif kind == "blur":
                await console.blur()
            elif kind == "focus":
                await console.focus()

    async def _close_when_idle(self, session: WebSession, websocket: web.WebSocketResponse) -> None:
        limit = self.config.idle_timeout_minutes * 60
        while not websocket.closed:
            left = session.last_active + limit - self._now()
            if left <= 0:
                session.closed_for = "idle"
                log.info("session %s (%s): idle, closing", session.id, session.user)
                await websocket.close(
                    code=IDLE_CLOSE_CODE,
                    message=f"idle for {self.config.idle_timeout_minutes:g} min".encode(),
                )
                return
            await asyncio.sleep(left)

    async def close_session(self, session: WebSession) -> None:
        """End a session's console (if any) and forget the session."""
        try:
            if session.console is not None:
                await session.console.stop()
        finally:
            if self.sessions.pop(session.id, None) is not None:
                self.ended_sessions.append(session)
            session.ended.set()


def _loader(path: Path) -> Any:
    import jinja2

    return jinja2.FileSystemLoader(path)


@dataclass
class RunningWeb:
    """A started web server: its runner and the URL it listens on."""

    server: WebConsoleServer
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        """Close every session and the listening socket."""
        await self.runner.cleanup()


async def start_web(server: WebConsoleServer) -> RunningWeb:
    """Bind ``server`` to its configured host and port (0: any free port)."""
    config = server.config
    context = ssl_context(config.tls_cert, config.tls_key)
    runner = web.AppRunner(
        await server.make_app(), access_log=None, handle_signals=False, shutdown_timeout=5
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1]) if runner.addresses else config.port
    host = config.host if ":" not in config.host else f"[{config.host}]"
    url = f"{'https' if context else 'http'}://{host}:{port}"
    return RunningWeb(server, runner, url)


async def serve_web(server: WebConsoleServer, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT (or ``stop`` is set), then end every console."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    running = await start_web(server)
    print(f"omniops web: listening on {running.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await running.stop()


def run_web(args: Namespace, console_command: Callable[[Path], list[str]]) -> int:
    """Entry point of ``omniops web``: 0 after a clean stop, 2 on a configuration error.

    Args:
        args: The parsed options (see :func:`add_web_arguments`).
        console_command: The argument list that starts one console on a store.
    """
    from feeds.settings import Settings
    from rules.errors import describe_validation_error
    from rules.roles import current_user

    log_to_stderr(args.log_level)
    try:
        config = load_web_config(
            db=args.db,
            host=args.host,
            port=args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_sessions=args.max_sessions,
            idle_timeout_minutes=args.idle_timeout_minutes,
        )
        tokens = config.tokens()
        if not config.db.exists():
            raise WebConfigError(
                f"{config.db}: no such store (start `omniops serve` or run `omniops ingest`)"
            )
        ssl_context(config.tls_cert, config.tls_key)  # a bad certificate fails now, not later
        roles = Settings().roles
        for user in capped_users(roles, sorted(tokens)):
            log.warning(
                "web user %s has the role %s in [roles], but the OS user %s running omniops web is "
                "only %s, so %s's sessions get that; list %s in [roles] to lift it",
                user,
                roles.role_of(user),
                current_user(),
                roles.role_of(current_user()),
                user,
                current_user(),
            )
        server = WebConsoleServer(config, tokens, console_command(config.db))
        asyncio.run(serve_web(server))
    except (ValidationError, ValueError, OSError) as exc:
        message = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"omniops web: {message}", file=sys.stderr)
        return 2
    return 0
