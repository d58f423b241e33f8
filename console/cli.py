"""The ``omniops`` command: demo, console, ingest, report, schema.

Heavy imports (Textual) happen inside the subcommands that need them, so ``ingest`` and
``report`` start fast and work without a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.clock import Clock, ReplayClock, SystemClock, within_calendar

if TYPE_CHECKING:
    from console.app import OmniopsApp
    from console.loading_console import LoadingConsole
    from console.screens.alerts import AlertsScreen
    from console.screens.feeds import FeedsScreen
    from console.screens.routing import RoutingScreen
    from console.screens.rules import RulesScreen
    from console.screens.silences import SilencesScreen
    from feeds.runtime.demo import HistoryBuild
    from feeds.runtime.routing import StoreRoutingSource
    from feeds.settings import Settings
    from rules.roles import Roles
    from store.risk import MetricParams
    from store.snapshots import Snapshots

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "day"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a time without a zone is refused (ambiguous)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--at: not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--at: give a zone, e.g. {text}Z or {text}-05:00")
    utc = within_calendar(moment)
    if utc is None:
        raise argparse.ArgumentTypeError(f"--at: give a time from 1900 to 8999, not {text!r}")
    return utc


MAX_SPEED = 365 * 86_400.0
"""The fastest ``--speed``: a simulated year a wall second."""


def positive_speed(text: str) -> float:
    """A ``--speed``: a number of simulated seconds per wall second, above 0."""
    try:
        speed = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < speed <= MAX_SPEED:
        raise argparse.ArgumentTypeError(
            f"{text}: give simulated seconds per wall second above 0 and at most 31536000"
            " (a year a second), e.g. 60 (an hour a minute)"
        )
    return speed


def positive_seconds(text: str) -> float:
    """A ``--refresh``: wall seconds between panel refreshes, above 0."""
    try:
        seconds = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < seconds <= 86_400:
        raise argparse.ArgumentTypeError(
            f"{text}: give wall seconds above 0 and at most 86400 (a day), e.g. 5"
        )
    return seconds


def time_zone(text: str) -> str:
    """A ``--timezone``: an IANA zone name the system knows (``America/New_York``)."""
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(text)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text!r} (an IANA name, e.g. America/New_York)"
        ) from None
    return text


class BadStore(Exception):
    """A ``--db`` that cannot be a store: not SQLite, empty, or in a missing folder."""


STORE_CHECKED = frozenset(
    {"demo", "console", "ingest", "report", "import-history", "mapping", "quarantine"}
)
"""Commands whose ``--db`` :func:`check_db` checks before they run (serve and web check theirs)."""

SQLITE_HEADER = b"SQLite format 3\x00"


def check_db(db: Path | None) -> None:
    """Refuse a ``--db`` in a folder that does not exist, or a file that is not SQLite.

    A missing file in an existing folder is for the command to judge (``ingest`` creates
    it, ``console`` refuses it); no command creates a missing folder.
    """
    if db is None:
        return
    path = Path(db)
    if not path.exists():
        if not path.parent.is_dir():
            raise BadStore(f"--db {db}: the folder {path.parent} does not exist")
        return
    if path.is_dir():
        raise BadStore(f"--db {db}: a folder, not a store file")
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_HEADER))
    if not head:
        raise BadStore(
            f"--db {db}: an empty file (0 bytes), not a store; remove it or pick another"
        )
    if head != SQLITE_HEADER:
        raise BadStore(f"--db {db}: not an SQLite file, so not an omniops store")


def package_version() -> str:
    """The installed omniops version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omniops")
    except PackageNotFoundError:
        return "unknown (not installed)"


USER_PAGE = """\
omniops: the operations console of an omnichannel retailer: sales, fulfillment, stock and
returns across the web shop, stores and marketplaces, live, in the terminal.

Start here:
  omniops demo                          a replayed trading day, with the console
  omniops ingest fixtures/day --db s.db write event files into a store
  omniops report --db s.db              the panels' figures as text (--json for JSON)
  omniops console --db s.db             the console on a store

Each command (omniops COMMAND --help tells more):
  demo            replay the fixture day, with the console    omniops demo --speed 120
  console         the console on an existing store            omniops console --db s.db
  ingest          write event files into a store              omniops ingest day/ --db s.db
  report          panel figures as text or JSON               omniops report --db s.db --json
  schema          the JSON Schema of a canonical event        omniops schema > event.json
  rules           check and test the alert and routing rules  omniops rules check
  serve           the single writer: webhooks, feeds, API     omniops serve --db s.db
  kafka           check the Kafka subscriptions of serve      omniops kafka check
  web             the console in a browser, by token          omniops web --db s.db
  import-history  import an order-line history CSV            omniops import-history o.csv --db s.db
  mapping         external ids seen without a mapping         omniops mapping suggest --db s.db
  quarantine      list, show and replay held deliveries       omniops quarantine replay --db s.db
"""


LIGHT_COMMANDS = frozenset(
    {"demo", "console", "ingest", "report", "schema", "kafka", "import-history"}
)
"""Commands whose arguments are all defined here: parsing them needs no other command's
module (``serve``'s arguments import the whole server, about a second of a console's start)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand.

    ``command``: the first word of the command line; when it is one of
    :data:`LIGHT_COMMANDS` the parser holds what parsing it needs and leaves out the
    arguments of the commands defined elsewhere (``serve``, ``web``, ``rules``,
    ``quarantine``, ``mapping``), whose modules are slow to import.  Anything else (no
    command, ``--help``, ``--version``, a typo) gets the full parser.
    """
    from feeds.runtime.logs import log_help

    full = command not in LIGHT_COMMANDS

    parser = argparse.ArgumentParser(
        prog="omniops",
        description=USER_PAGE,
        epilog=log_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"omniops {package_version()}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="replay the fixture day through the pipeline, with the console",
        epilog=log_help(),
    )
    demo.add_argument(
        "--speed",
        type=positive_speed,
        default=60.0,
        help="simulated seconds per wall second (default 60: an hour a minute)",
    )
    demo.add_argument("--db", type=Path, default=None, help="store file (default: a temporary one)")
    demo.add_argument("--fixtures", type=Path, default=FIXTURES, help="fixture folder to replay")
    demo.add_argument(
        "--refresh", type=positive_seconds, default=5.0, help="panel refresh, wall seconds"
    )
    demo.add_argument(
        "--rules", default=None, help="rules file (default: a fresh copy of the defaults)"
    )

    con = sub.add_parser("console", help="the console on an existing store", epilog=log_help())
    con.add_argument("--db", type=Path, default=None, help="store file (default from config)")
    con.add_argument("--read-only", action="store_true", help="never change rules or alerts")

    ing = sub.add_parser("ingest", help="write canonical JSON Lines files or folders into a store")
    ing.add_argument(
        "paths", type=Path, nargs="+", help="event files (*.jsonl, *.jsonl.gz) or folders of them"
    )
    ing.add_argument("--db", type=Path, required=True, help="store file (created if missing)")

    rep = sub.add_parser("report", help="the panel snapshots and headline, as JSON or text")
    rep.add_argument("--db", type=Path, required=True, help="store file to report on")
    rep.add_argument("--json", action="store_true", help="print JSON")
    rep.add_argument(
        "--at",
        type=parse_time,
        default=None,
        help="evaluate as of this ISO time with a zone, 1900 to 8999 (default: now)",
    )
    rep.add_argument(
        "--timezone", type=time_zone, default=None, help="the store's local zone for 'today'"
    )

    sub.add_parser("schema", help="print the JSON Schema of a canonical event")

    if full:
        from rules.cli import add_rules_arguments

        add_rules_arguments(sub)

    srv = sub.add_parser("serve", help="the store's single writer: webhooks, subscriptions, API")
    if full:
        from feeds.runtime.serve import add_serve_arguments

        add_serve_arguments(srv)

    kafka = sub.add_parser("kafka", help="Kafka subscriptions of serve")
    kafka.add_argument("action", choices=["check"], help="check: brokers, topics, offsets, lag")

    web = sub.add_parser("web", help="the console in a browser: a console per session, by token")
    if full:
        from feeds.runtime.quarantine_cli import add_arguments as add_quarantine_arguments
        from feeds.runtime.web_config import add_web_arguments

        add_web_arguments(web)
        add_quarantine_arguments(sub)  # mapping suggest; quarantine list | show | replay

    hist = sub.add_parser(
        "import-history", help="import an order-line history CSV (Online Retail shape)"
    )
    hist.add_argument("csv", type=Path, help="the CSV file (InvoiceNo, StockCode, Quantity, ...)")
    hist.add_argument("--db", type=Path, required=True, help="store file (created if missing)")
    hist.add_argument("--channel", default="history", help="channel the sales belong to")
    hist.add_argument("--location", default="-", help="location the sales were made at")
    hist.add_argument("--timezone", default="UTC", help="zone of the CSV's local times")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniops`` command."""
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(words[0] if words else None).parse_args(words)
    if args.command in ("console", "demo"):  # full screen: the terminal cannot show logs
        from feeds.runtime.logs import log_to_file

        log_to_file()
    try:
        if args.command in STORE_CHECKED:
            check_db(getattr(args, "db", None))
        handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
        return handler(args)
    except BadStore as exc:
        print(f"omniops {args.command}: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        logging.getLogger("omniops").error("%s", exc)
        print(f"omniops: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the console: the work cleaned up after itself
        print("omniops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `omniops report | head`: the reader left, nothing to say
        sys.stderr.close()
        return 0
    except Exception as exc:
        problem = settings_problem(exc)
        if problem is None:
            raise
        print(f"omniops {args.command}: {problem}", file=sys.stderr)
        return 2


def settings_problem(exc: BaseException) -> str | None:
    """What is wrong with the settings, one line by key, if ``exc`` is their validation error.

    ``Settings()`` refusing the config file or the environment (``metrics.top_n: Input
    should be a valid integer``) is the operator's to fix, not a crash: it gets this line,
    naming the file, not a traceback.  Any other error: None.
    """
    core = sys.modules.get("pydantic_core")  # loaded if the settings were read at all
    if core is None or not isinstance(exc, core.ValidationError) or exc.title != "Settings":
        return None
    from feeds.settings import config_file
    from rules.errors import describe_validation_error

    return (
        f"the settings ({config_file()} and the OMNIOPS_ environment) are not valid: "
        f"{describe_validation_error(exc)}"
    )


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the canonical event's JSON Schema."""
    from store.model import event_json_schema

    print(json.dumps(event_json_schema(), indent=2))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest files; print applied / duplicate / quarantined counts."""
    from console.progress import TerminalProgress, summary_line
    from feeds.runtime.ingest import ingest_paths

    progress = TerminalProgress("ingest") if sys.stderr.isatty() else None
    began = time.monotonic()
    try:  # a missing path, or folders with no event files: main() says so, exit 2
        counts = asyncio.run(
            ingest_paths(
                args.paths,
                args.db,
                progress=progress,
                on_total=None if progress is None else progress.set_total,
            )
        )
    finally:
        if progress is not None:
            progress.close()
    if progress is None:  # not a terminal: one summary line instead of a live count
        done = sum(counts.values())
        print(summary_line("ingest", done, time.monotonic() - began), file=sys.stderr)
    print(
        f"applied {counts['applied']}, duplicate {counts['duplicate']}, "
        f"quarantined {counts['quarantined']}"
    )
    return 0


def _metric_params(args: argparse.Namespace) -> MetricParams:
    import dataclasses

    from feeds.settings import Settings

    params = Settings().metrics
    if getattr(args, "timezone", None):
        params = dataclasses.replace(params, timezone=args.timezone)
    return params


def report(db: Path, at: datetime, params: MetricParams) -> Snapshots:
    """The same computation the console's panels show, for one moment."""
    from store.metrics import compute_snapshots, open_reader

    reader = open_reader(db)
    try:
        return compute_snapshots(reader, at, params)
    finally:
        reader.close()


def cmd_report(args: argparse.Namespace) -> int:
    """Print the snapshots as JSON (``--json``) or a short text summary."""
    from store.snapshots import to_jsonable

    at = args.at or SystemClock().now()
    snaps = report(args.db, at, _metric_params(args))
    data = to_jsonable(snaps)
    data.pop("computed_in_ms", None)  # keep the report reproducible
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
        return 0
    h = snaps.headline
    print(
        f"as of {data['as_of']}: net sales today {h.net_sales:,.2f}, "
        f"orders last hour {h.orders_per_hour:.0f}"
    )
    f = snaps.fulfillment
    print(f"fulfillment: {f.total_open} open, {f.total_late} late, {f.total_at_risk} at risk")
    s = snaps.stockout
    print(
        f"stock: {s.total_out} out, {s.total_at_risk} at risk, {s.total_oversell} oversell "
        f"of {s.total_pairs} SKU × locations"
    )
    print(f"returns: {snaps.returns.spikes} spikes")
    for feed in h.feeds:
        print(f"feed {feed.feed}: {'STALE' if feed.stale else 'ok'} last {feed.last_event_at}")
    return 0


SETTINGS_FREE_ENV = frozenset({"OMNIOPS_CONFIG", "OMNIOPS_RULES", "OMNIOPS_LOG_FILE"})
"""``OMNIOPS_`` variables that are not settings: the config file's and the rules file's
names and the log file (``tests/test_settings.py`` checks no setting reads these names)."""


class DefaultSettings:
    """The settings when nothing configures them: :class:`~feeds.settings.Settings`' defaults.

    What the console reads of them before its first paint, without pydantic (building the
    settings model imports pydantic and pydantic-settings and builds every section's model:
    about a fifth of the console's start, issue 15).  Anything else (the roles, on first
    use, after the first paint) is read from ``Settings()``, which then is the defaults too.
    ``tests/test_settings.py`` checks these are ``Settings()``' values.
    """

    db = Path("omniops.db")
    refresh_interval = 60.0
    display_timezone: str | None = None
    rules_file: Path | None = None

    def __init__(self) -> None:
        """The defaults (fresh mutable ones: the key map, the metric parameters)."""
        from store.risk import MetricParams

        self.keys: dict[str, str] = {}
        self.metrics = MetricParams()
        self._full: Settings | None = None

    def display_tz(self) -> tzinfo:
        """The machine's zone, by name (no ``display_timezone``)."""
        from feeds.localzone import local_zone

        return local_zone()

    @property
    def roles(self) -> Roles:
        """The configured roles: ``Settings().roles`` (the defaults), built when first asked."""
        if self._full is None:
            from feeds.settings import Settings

            self._full = Settings()
        return self._full.roles


def read_settings() -> Settings | DefaultSettings:
    """The settings in force: ``Settings()``, or :class:`DefaultSettings` when nothing is set.

    Nothing is set when the config file (``$OMNIOPS_CONFIG``, else
    ``$XDG_CONFIG_HOME/omniops/config.toml``) does not exist and no ``OMNIOPS_`` variable
    but :data:`SETTINGS_FREE_ENV` is in the environment: ``Settings()`` would then be its
    defaults, with nothing to validate.  Otherwise the settings are read and validated (a
    bad value raises pydantic's ``ValidationError``).
    """
    import os

    from store.paths import config_dir

    named = os.environ.get("OMNIOPS_CONFIG")  # feeds.settings.config_file(), pydantic-free
    path = Path(named).expanduser() if named else config_dir() / "config.toml"
    configured = any(
        name.upper().startswith("OMNIOPS_") and name.upper() not in SETTINGS_FREE_ENV
        for name in os.environ
    )
    if configured or path.exists():
        from feeds.settings import Settings

        return Settings()
    return DefaultSettings()


def build_console(
    db: Path,
    clock: Clock,
    params: MetricParams,
    refresh: float,
    title: str = "omniops",
    tz: tzinfo | None = None,
    *,
    rules_path: Path | None = None,
    read_only: bool = False,
    roles: Roles | None = None,
    after_first_paint: Callable[[], None] | None = None,
    app_factory: Callable[..., OmniopsApp] | None = None,
    settings: Settings | DefaultSettings | None = None,
) -> tuple[OmniopsApp, Callable[[], None]]:
    """The console app wired to store ``db``, and the function that closes its readers.

    ``rules_path`` (default from the settings) is the rules file the alerts, rules and
    routing views read and edit; ``roles`` overrides the configured roles (the demo makes
    its user an editor); ``read_only`` forbids every change.  ``after_first_paint``
    (blocking) runs in a worker once the first snapshots are on screen, before the rules
    file is read (the demo starts its replay and writes its rules file there).
    ``app_factory`` builds the app from :class:`OmniopsApp`'s keyword arguments (the demo's
    console during its history load is a subclass).  ``settings``: the settings in force,
    when the caller has already read them (default: read here).
    """
    # The first paint waits only on the store's readers and the panels (issue 15): the
    # rules file (highlights, editor, alert actions, permissions), the views' screens and the
    # routing source are loaded after it, in the warm-up or when a view first opens.
    from store.metrics import compute_snapshots, open_reader

    if TYPE_CHECKING:
        from rules.alerts.actions import AlertActions, PanelTarget
        from rules.editor import RulesEditor
        from rules.roles import Permissions
        from rules.routing.config import FulfillmentRouting
        from store.snapshots import HeldSummary, LateOrders, StockHistory

    reader = open_reader(db)
    detail_readers: list[Any] = []  # detail fetches may overlap a refresh: own connection
    last: list[Snapshots] = []

    in_use = threading.Lock()  # closing a connection a worker thread still uses crashes

    # The first snapshots, as of now, are computed on a thread from here on, while the
    # console's modules load (the store's reads release the GIL): the first refresh takes
    # them, so the panels are populated in the console's first layout, not in a second one.
    first = FirstSnapshots(lambda moment: compute_snapshots(reader, moment, params), clock, in_use)
    first.start()

    try:
        from console.app import OmniopsApp
        from rules.highlights import Highlights, RulesHighlights

        if settings is None:
            settings = read_settings()  # a bad config raises here: the reader is not left open
    except BaseException:
        first.discard()
        reader.close()
        raise

    def detail_reader() -> Any:
        """The detail fetches' own connection, opened with the first of them (under ``in_use``)."""
        if not detail_readers:
            detail_readers.append(open_reader(db))
        return detail_readers[0]

    def compute_at(moment: datetime) -> Snapshots:
        if warmed and highlights is not None:
            highlights.refresh()  # the thresholds the panels flag at follow the rules file
        with in_use:
            snaps = compute_snapshots(reader, moment, params)
        last[:] = [snaps]
        return snaps

    def compute() -> Snapshots:
        snaps = first.take()
        if snaps is not None:
            last[:] = [snaps]
            return snaps
        return compute_at(clock.now())

    def first_ready() -> Snapshots | None:
        snaps = first.take_ready()
        if snaps is not None:
            last[:] = [snaps]
        return snaps

    def detail(row: object) -> StockHistory | LateOrders | None:
        from store.details import late_orders, stock_history
        from store.snapshots import FulfillmentRow, StockoutRow

        now = last[0].as_of if last else clock.now()
        with in_use:
            if isinstance(row, StockoutRow):
                return stock_history(
                    detail_reader(), row.sku, row.location_id, now, params.timezone
                )
            if isinstance(row, FulfillmentRow) and row.scope == "location":
                return late_orders(detail_reader(), row.key, now)
        return None

    def export(panel: str, fmt: str, path: Path, rows: Sequence[object]) -> Path:
        from store.export import export_panel

        if not last:
            raise RuntimeError("nothing to export yet: the first refresh has not finished")
        return export_panel(last[0], panel, fmt, path, rows=rows)

    zone = tz or settings.display_tz()
    path = rules_path or settings.rules_file
    highlights = RulesHighlights(path) if path is not None else None
    warmed: list[bool] = []
    services: dict[str, Any] = {}

    def rules_file() -> Path:
        """The rules file, written from the shipped defaults the first time it is needed."""
        nonlocal highlights
        if "path" not in services:
            from rules.file import default_rules_path, ensure_rules_file

            services["path"] = path or default_rules_path()
            ensure_rules_file(services["path"])
            if highlights is None:
                highlights = RulesHighlights(services["path"])
        return Path(services["path"])

    def warm_up() -> bool:
        """After the first paint: the rules file's highlights (redraw if they changed)."""
        failed: Exception | None = None
        if after_first_paint is not None:
            try:
                after_first_paint()
            except Exception as exc:  # said once the highlights are loaded all the same
                failed = exc
        rules_file()
        assert highlights is not None
        before = highlights.current()
        warmed.append(True)
        changed = highlights.refresh() != before
        if failed is not None:
            raise failed
        return changed

    default_highlights = Highlights()

    def current_highlights() -> Highlights:
        return highlights.current() if highlights is not None else default_highlights

    def permissions() -> Permissions:
        if "permissions" not in services:
            from rules.identity import console_permissions

            # a browser session (``omniops web``) acts as its web user, like an SSH login
            services["permissions"] = console_permissions(
                roles or settings.roles, read_only=read_only
            )
        return services["permissions"]  # type: ignore[no-any-return]

    def editor() -> RulesEditor:
        if "editor" not in services:
            from rules.editor import RulesEditor

            services["editor"] = RulesEditor(rules_file(), permissions=permissions(), clock=clock)
        return services["editor"]  # type: ignore[no-any-return]

    opening_actions = threading.Lock()  # the top bar's count opens them from a worker

    def actions() -> AlertActions:
        with opening_actions:
            if "actions" not in services:
                from rules.alerts.actions import AlertActions
                from store import alerts as alert_store

                services["actions"] = AlertActions(
                    lambda: alert_store.connect(db), clock, permissions()
                )
        return services["actions"]  # type: ignore[no-any-return]

    opened: list[StoreRoutingSource] = []

    def routing_source() -> StoreRoutingSource:
        """The store's routing decisions, opened with the routing view the first time."""
        if not opened:
            from feeds.runtime.routing import StoreRoutingSource

            opened.append(StoreRoutingSource(db, timezone=params.timezone))
        return opened[0]

    def alerts_view(app: OmniopsApp) -> AlertsScreen:
        from console.screens.alerts import AlertsScreen

        def jump(target: PanelTarget) -> None:
            app.pop_screen()
            app.main_screen.action_show_tab(target.panel)
            app.main_screen.apply_filter(target.panel, target.filter)

        return AlertsScreen(source=actions(), clock=clock, tz=zone, on_jump=jump)

    def silences_view(app: OmniopsApp) -> SilencesScreen:
        from console.screens.silences import SilencesScreen

        return SilencesScreen(source=actions(), clock=clock, tz=zone)

    def rules_view(app: OmniopsApp) -> RulesScreen:
        from console.screens.rules import RulesScreen

        return RulesScreen(
            editor=editor(),
            tz=zone,
            snapshots=lambda: app.snapshots,
            fired_counts=actions().fired_counts,
        )

    def save_routing(routing: FulfillmentRouting) -> FulfillmentRouting:
        rules = editor()
        return rules.save_fulfillment(rules.load(), routing).rules.fulfillment

    def routing_view(app: OmniopsApp) -> RoutingScreen:
        from console.screens.routing import RoutingScreen, RoutingServices

        rules = editor()
        routing_services = RoutingServices(
            load_rules=lambda: rules.load().rules.fulfillment,
            what_if=lambda current, draft: routing_source().what_if(current, draft, clock.now()),
            explain=lambda order_id: routing_source().decision(order_id),
            edited=lambda order_id: routing_source().edited_lines(order_id),
            save_rules=save_routing if permissions().can_edit_rules else None,
        )
        return RoutingScreen(services=routing_services, tz=zone)

    def held() -> HeldSummary:
        from store.held import held_summary

        with in_use:
            return held_summary(detail_reader())

    def replay_held() -> str:
        permissions().require("acknowledge")  # operators and editors (never read-only)
        from feeds.runtime.quarantine_cli import replay_store

        return replay_store(db)

    def feeds_view(app: OmniopsApp) -> FeedsScreen:
        from console.screens.feeds import FeedsScreen

        return FeedsScreen(snapshots=app.snapshots, tz=app.tz, held=held, replay=replay_held)

    app = (app_factory or OmniopsApp)(
        compute=compute,
        compute_at=compute_at,
        clock=clock,
        tz=zone,
        refresh_interval=refresh,
        export=export,
        detail=detail,
        views={
            "alerts": alerts_view,
            "rules": rules_view,
            "routing": routing_view,
            "feeds": feeds_view,
            "silences": silences_view,
        },
        title=title,
        highlights=current_highlights,
        warm_up=warm_up,
        first=first_ready,
        alert_count=lambda: actions().count(),
    )
    if settings.keys:
        app.set_keymap(settings.keys)

    def close() -> None:
        first.discard()
        with in_use:
            reader.close()
            for opened_reader in detail_readers:
                opened_reader.close()
        for source in opened:
            source.close()
        if "actions" in services:
            services["actions"].close()

    return app, close


class FirstSnapshots(threading.Thread):
    """The console's first snapshots, computed on a thread as soon as its store is open.

    :meth:`take` (the first refresh) waits for them and hands them over once; a failure is
    raised there, as the refresh's own would be.  :meth:`discard` (the console closed
    first) waits for the thread, so the store's connection is not closed under it.
    """

    def __init__(
        self,
        compute: Callable[[datetime], Snapshots],
        clock: Clock,
        lock: threading.Lock,
    ) -> None:
        """Compute ``compute(clock.now())`` holding ``lock`` (the reader's)."""
        super().__init__(name="omniops-first-snapshots", daemon=True)
        self._compute = compute
        self._clock = clock
        self._lock = lock
        self._result: Snapshots | None = None
        self._error: Exception | None = None
        self._taken = False

    def run(self) -> None:
        """Compute the snapshots (a failure is kept for :meth:`take`)."""
        try:
            with self._lock:
                self._result = self._compute(self._clock.now())
        except Exception as exc:  # raised by take(), in the refresh worker
            self._error = exc

    def take(self) -> Snapshots | None:
        """The first snapshots (waiting for them), once; None on every later call."""
        if self._taken:
            return None
        self._taken = True
        self.join()
        result, error, self._result, self._error = self._result, self._error, None, None
        if error is not None:
            raise error
        return result

    def take_ready(self) -> Snapshots | None:
        """The first snapshots if they are computed already (never waits), once; else None.

        A failure is left for :meth:`take`, which raises it in the refresh worker.
        """
        if self._taken or self.ident is None or self.is_alive() or self._error is not None:
            return None
        return self.take()

    def discard(self) -> None:
        """Wait for the thread and drop what it computed."""
        self._taken = True
        if self.ident is not None:
            self.join()
        self._result = self._error = None


def run_console(
    db: Path,
    clock: Clock,
    params: MetricParams,
    refresh: float,
    title: str = "omniops",
    tz: tzinfo | None = None,
    **options: Any,
) -> None:
    """Start the Textual console on store ``db`` (which must exist)."""
    app, close = build_console(db, clock, params, refresh, title, tz, **options)
    try:
        app.run()
    finally:
        close()


def console_clock(db: Path) -> tuple[Clock, str]:
    """The clock and top-bar title of a console on ``db``.

    A demo's store records its replay clock: a console on it follows that clock and says so
    in the top bar.  Any other store is live: the wall clock.
    """
    from store.replay_clock import load_replay_clock

    replay = load_replay_clock(db)
    if replay is None:
        return SystemClock(), "omniops"
    return replay, f"omniops · demo replay clock ×{replay.speed:g}"


def cmd_console(args: argparse.Namespace) -> int:
    """The console on a store another process writes (on its replay clock if a demo's)."""
    settings = read_settings()
    db = args.db or settings.db
    if not Path(db).exists():
        raise FileNotFoundError(
            f"{db}: no such store (start `omniops serve` or run `omniops ingest`)"
        )
    clock, title = console_clock(Path(db))
    run_console(
        db,
        clock,
        settings.metrics,
        settings.refresh_interval,
        title,
        read_only=args.read_only,
        settings=settings,  # read once: not a second time in build_console
    )
    return 0


DEMO_CONSOLE_MODULES = (
    "store.metrics",
    "store.replay_clock",
    "store.risk",
    "rules.roles",
    "feeds.settings",
    "textual.app",
)
"""What the demo imports while its store is copied: everything its console needs before
the first paint but the console's own modules, which :func:`build_console` imports beside
the first snapshots' computation (it starts once the store is there)."""


def _load_console_modules() -> None:
    """Import what the demo's console needs (while its store is copied: the copy is I/O)."""
    import importlib

    for name in DEMO_CONSOLE_MODULES:
        importlib.import_module(name)
    widgets = importlib.import_module("textual.widgets")  # its widgets load when named
    for widget in DEMO_CONSOLE_WIDGETS:
        getattr(widgets, widget)


def _load_loading_console() -> None:
    """Import the console shown over a history still loading (on a thread, during the bar)."""
    import importlib

    _load_console_modules()
    importlib.import_module("console.loading_console")


DEMO_CONSOLE_WIDGETS = ("DataTable", "Footer", "Input", "Static", "TabbedContent", "Tabs")
"""The Textual widgets the console's first screen is made of."""


def copy_while(cached: Path, db: Path, meanwhile: Callable[[], None]) -> None:
    """Copy the cached store to ``db`` on a thread while ``meanwhile`` runs here.

    A copy is the kernel's work (the GIL is released), so the demo's imports run beside it.
    """
    from feeds.runtime.demo import copy_store

    failed: list[BaseException] = []

    def copy() -> None:
        try:
            copy_store(cached, db)
        except BaseException as exc:  # raised on the waiting thread
            failed.append(exc)

    copier = threading.Thread(target=copy, name="omniops-demo-copy")
    copier.start()
    try:
        meanwhile()
    finally:
        copier.join()
    if failed:
        raise failed[0]


def demo_history(
    fixtures: Path,
    start: datetime,
    db: Path,
    *,
    partial: Callable[[HistoryBuild], bool] | None = None,
) -> bool:
    """Put the demo's history store at ``db``; ``False`` if the user quit while it loaded.

    On a terminal, when the history must be built, the console opens at once with a
    progress bar (:class:`console.loading.LoadingApp`) while the build runs on a thread;
    ``q`` or Ctrl-C cancel it and nothing is left behind.  With ``partial``, the bar gives
    way as soon as a first full day of history is committed: ``partial(build)`` (the real
    console over what is loaded, see :func:`loading_console`) runs until the build ends and
    says whether it finished (``False``: the user quit; the build is then cancelled).
    Elsewhere the build runs here.  A cached history is copied while the console's modules
    load.
    """
    from feeds.runtime.demo import HistoryBuild, cached_store, copy_store, prepare_demo_store

    cached = cached_store(fixtures, start)
    if cached.exists():  # the key (a digest of the fixtures) is computed once
        copy_while(cached, db, _load_console_modules)
        return True
    if not sys.stdout.isatty():
        prepare_demo_store(fixtures, start, db)
        return True
    from console.loading import LoadingApp

    build = HistoryBuild(fixtures, start)
    # The console over the partial history imports its modules meanwhile, so that the gap
    # between the bar and the panels is the console's first snapshots, not its imports.
    importer = threading.Thread(
        target=_load_loading_console, name="omniops-demo-imports", daemon=True
    )

    def shown() -> None:
        build.start()
        if partial is not None:
            importer.start()

    try:  # the build starts once the screen is up: it would compete with the first paint
        finished = LoadingApp(build, on_shown=shown, until_partial=partial is not None).run()
        if importer.ident is not None:
            importer.join()
        if finished and not build.finished and partial is not None:
            finished = partial(build)
    finally:
        if build.ident is not None:  # started
            if not build.finished:
                build.cancel()
            build.join()
    if not finished:
        return False
    if build.error is not None:
        raise build.error
    assert build.result is not None
    copy_store(build.result, db)
    return True


LOADING_REFRESH = 2.0
"""Wall seconds between refreshes of the console while the history loads (at most)."""


def loading_console(
    build: HistoryBuild,
    params: MetricParams,
    refresh: float,
    tz: tzinfo,
    rules_path: Path,
) -> tuple[LoadingConsole, Callable[[], None]]:
    """The console over a history build's temporary store, as of what is committed.

    Read-only, on the build's :class:`~console.loading_console.HighWaterClock`; the app and
    the function that closes its readers (call it before the build may remove its store).
    """
    from functools import partial

    from console.loading_console import HighWaterClock, LoadingConsole

    store = build.progress.store
    if store is None:
        raise RuntimeError("the history build has no store yet")
    app, close = build_console(
        store,
        HighWaterClock(build.progress),
        params,
        min(refresh, LOADING_REFRESH),
        title="omniops demo",
        tz=tz,
        rules_path=rules_path,
        read_only=True,
        app_factory=partial(LoadingConsole, load=build),
    )
    assert isinstance(app, LoadingConsole)
    return app, close


class DemoReplay:
    """The demo's pipeline (the fixture day replayed, alerting), started behind the console.

    :meth:`start` (blocking; the console runs it in a worker after its first paint) writes
    the demo rules file if it is the demo's own, then starts the pipeline and waits until it
    runs; :meth:`stop` stops it, and once stopped a late :meth:`start` starts nothing.
    """

    def __init__(
        self,
        db: Path,
        fixtures: Path,
        start: datetime,
        clock: ReplayClock,
        params: MetricParams,
        refresh: float,
        rules_path: Path,
        *,
        demo_rules: bool,
        after: Callable[[], None] | None = None,
    ) -> None:
        """Replay ``fixtures`` from ``start`` into ``db`` on ``clock``; alerts every ``refresh``.

        ``after`` (blocking) runs first in :meth:`start`: what must be done with the store
        before the pipeline writes it (the demo's replay clock record).
        """
        self.db = db
        self.fixtures = fixtures
        self.start_at = start
        self.clock = clock
        self.params = params
        self.refresh = refresh
        self.rules_path = rules_path
        self.demo_rules = demo_rules
        self._after = after
        self._lock = threading.Lock()
        self._stopped = False
        self._pipeline: Any = None

    def start(self) -> None:
        """Write the demo rules if needed, start the pipeline, wait until it runs."""
        from feeds.replay import ReplayFeed
        from feeds.runtime.alerting import RulesRuntime, alert_loop
        from feeds.runtime.demo_rules import ensure_demo_rules
        from feeds.runtime.pipeline import PipelineThread
        from feeds.runtime.routing import router_hook
        from store.writer import StoreWriter

        if self._after is not None:
            self._after()
        with self._lock:
            if self._stopped or self._pipeline is not None:
                return
            if self.demo_rules:
                ensure_demo_rules(self.rules_path, self.fixtures)
            runtime = RulesRuntime(self.rules_path)

            async def alerting(writer: StoreWriter) -> None:
                await alert_loop(self.db, runtime, self.clock, self.params, self.refresh)

            pipeline = PipelineThread(
                self.db,
                [ReplayFeed([self.fixtures], self.clock, since=self.start_at)],
                background=[alerting],
                rules=runtime,
                writer_options={
                    "clock": self.clock,
                    "params": self.params,
                    "after_commit": router_hook(runtime.fulfillment),
                },
            )
            pipeline.start()
            self._pipeline = pipeline
            pipeline.ready.wait()
            if pipeline.error is not None:
                raise RuntimeError(f"the demo's pipeline failed: {pipeline.error}")

    def stop(self) -> None:
        """Stop the pipeline if it started; no later :meth:`start` starts it."""
        with self._lock:
            self._stopped = True
            if self._pipeline is not None:
                self._pipeline.stop()


def demo_params(zone: str) -> MetricParams:
    """The demo's metric parameters: its zone, and feeds that deliver rarely not stale."""
    from store.risk import MetricParams

    return MetricParams(
        timezone=zone,
        stale_overrides={"catalog": 45 * 24 * 60, "purchasing": 24 * 60, "returns": 120},
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Replay the fixture day through the real pipeline, with the console on the replay clock."""
    from zoneinfo import ZoneInfo

    from feeds.runtime.demo import FEED_SUFFIXES, feed_files, load_manifest

    try:
        found = feed_files(args.fixtures)
    except FileNotFoundError as exc:
        print(f"omniops demo: {exc}", file=sys.stderr)
        return 2
    if not found:  # else an empty console, with not a word why
        kinds = ", ".join(f"*{suffix}" for suffix in FEED_SUFFIXES)
        print(f"omniops demo: {args.fixtures}: no fixture files ({kinds})", file=sys.stderr)
        return 2
    manifest = load_manifest(args.fixtures)
    start = parse_time(str(manifest.get("replay_start_utc", "2026-11-18T13:00:00Z")))
    zone = str(manifest.get("timezone", "America/New_York"))
    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="omniops-demo-")
        db = Path(tmp.name) / "demo.db"
    rules_path = Path(args.rules) if args.rules else db.parent / "rules.toml"

    def while_loading(build: HistoryBuild) -> bool:
        """The console over the history committed so far; True once the build finished."""
        from feeds.runtime.demo_rules import ensure_demo_rules

        if not args.rules:  # the highlights follow the demo's rules, as after the load
            ensure_demo_rules(rules_path, args.fixtures)
        try:
            app, close = loading_console(
                build, demo_params(zone), args.refresh, ZoneInfo(zone), rules_path
            )
        except FileNotFoundError:
            if build.finished:  # it ended (its store renamed) since the bar left: go on
                return True
            raise
        try:
            app.run()
        finally:
            close()
        return bool(app.finished)

    try:
        if not demo_history(args.fixtures, start, db, partial=while_loading):
            return 0  # the user quit during the history load: nothing was kept
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    from rules.roles import Roles, current_user
    from store.replay_clock import record_replay_clock

    params = demo_params(zone)
    clock = ReplayClock(start, speed=args.speed)
    # Consoles opened on this store follow the same clock.  Written on a thread: its commit
    # flushes the freshly copied store to disk (tens of ms the first paint need not wait for);
    # the replay, which writes the store, starts only once it is written.
    recorded = threading.Thread(
        target=record_replay_clock, args=(db, clock), name="omniops-demo-clock"
    )
    recorded.start()
    replay = DemoReplay(
        db,
        args.fixtures,
        start,
        clock,
        params,
        args.refresh,
        rules_path,
        demo_rules=not args.rules,  # the shipped alert defaults plus the demo's routing
        after=recorded.join,
    )
    try:
        run_console(
            db,
            clock,
            params,
            args.refresh,
            title="omniops demo",
            tz=ZoneInfo(zone),
            rules_path=rules_path,
            roles=Roles(editors=(current_user(),)),  # the demo is a sandbox: you may edit
            after_first_paint=replay.start,  # the replay starts behind the first screen
        )
    finally:
        replay.stop()
        recorded.join()
        if tmp is not None:
            tmp.cleanup()
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    """``omniops rules check|route-test|metrics|defaults``."""
    from rules.cli import run_rules

    return run_rules(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``omniops serve`` until SIGINT / SIGTERM."""
    from feeds.runtime.serve import run_serve

    return run_serve(args)


def cmd_kafka(args: argparse.Namespace) -> int:
    """``omniops kafka check``: 0 when every subscription is reachable with its topics."""
    from feeds.kafka.check import check_all
    from feeds.settings import load_serve_config

    subs = load_serve_config().kafka
    if not subs:
        print("omniops kafka: no [[serve.kafka]] subscriptions configured")
        return 2
    reports = asyncio.run(check_all(subs))
    for report in reports:
        print("\n".join(report.lines()))
    return 0 if all(r.ok for r in reports) else 1


def console_command(db: Path) -> list[str]:
    """The argument list that starts ``omniops console`` on ``db`` (one per browser session)."""
    return [sys.executable, "-m", "console.cli", "console", "--db", str(Path(db).resolve())]


def cmd_web(args: argparse.Namespace) -> int:
    """Run ``omniops web`` until SIGINT / SIGTERM."""
    try:
        from feeds.runtime.web import run_web
    except ImportError as exc:  # textual-serve is the `web` extra
        print(f"omniops web: {exc}; install it with pip install 'omniops[web]'", file=sys.stderr)
        return 2

    return run_web(args, console_command)


def cmd_import_history(args: argparse.Namespace) -> int:
    """Import a history CSV and print what it held and what was stored."""
    import csv
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from console.progress import TerminalProgress, summary_line
    from feeds.csv_import import HistoryFileError
    from feeds.runtime.ingest import import_history

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(
            f"omniops import-history: --timezone: unknown time zone {args.timezone!r}"
            " (an IANA name such as Europe/London)",
            file=sys.stderr,
        )
        return 2
    csv_path = Path(args.csv)
    if not csv_path.is_file():
        what = "is a folder, not a CSV file" if csv_path.is_dir() else "does not exist"
        print(f"omniops import-history: {csv_path} {what}", file=sys.stderr)
        return 2
    progress = TerminalProgress("import-history") if sys.stderr.isatty() else None
    began = time.monotonic()
    try:
        result = asyncio.run(
            import_history(
                args.csv,
                args.db,
                args.channel,
                args.location,
                args.timezone,
                progress=progress,
                on_total=None if progress is None else progress.set_total,
            )
        )
    except (HistoryFileError, csv.Error) as exc:
        print(f"omniops import-history: {exc}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.close()
    if progress is None:
        stored = result.applied + result.duplicate + result.quarantined
        print(summary_line("import-history", stored, time.monotonic() - began), file=sys.stderr)
    print(
        f"rows {result.rows}: orders {result.orders}, lines {result.lines}, "
        f"returns {result.returns}, write-offs {result.write_offs}, "
        f"skipped {sum(result.skipped.values())}, "
        f"quarantined {result.quarantined_rows}; applied {result.applied}"
    )
    for problem in result.problems[:20]:
        print(f"  {problem}")
    return 0


def cmd_mapping(args: argparse.Namespace) -> int:
    """``omniops mapping suggest``."""
    from feeds.runtime.quarantine_cli import run_mapping

    return run_mapping(args)


def cmd_quarantine(args: argparse.Namespace) -> int:
    """``omniops quarantine list | show ID | replay``."""
    from feeds.runtime.quarantine_cli import run_quarantine

    return run_quarantine(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo,
    "console": cmd_console,
    "ingest": cmd_ingest,
    "report": cmd_report,
    "schema": cmd_schema,
    "serve": cmd_serve,
    "web": cmd_web,
    "rules": cmd_rules,
    "import-history": cmd_import_history,
    "kafka": cmd_kafka,
    "mapping": cmd_mapping,
    "quarantine": cmd_quarantine,
}


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
