"""Hostile input, second round: what a hostile or careless client could still do.

Over real HTTP against ``serve`` on 127.0.0.1 and a real SQLite file, unless the piece is
pure: a huge exponent in a quantity (no stall), an amount past Decimal's precision, an
``at`` outside the calendar and a 4,300-digit integer on ``/route`` (400/422, never 500),
U+2028 inside a JSON Lines string (one line, not two), a body of too many events (413),
a refused body over 64 KB held whole for a replay, many refused lines linked to their
held copy, the claimed ``source`` of a refused line, a client that goes away mid-body
(not a 500), files that are pipes, devices or too large (refused, never read), and
terminal controls or invisible characters in ids (refused) and in text (cleaned).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feeds.runtime.quarantine import hold_for
from feeds.runtime.quarantine_edit import EditError, set_fields
from feeds.webhooks import Mapped, PayloadError, integer, money
from feeds.webhooks.canonical import MAX_EVENTS, parse_events_body
from feeds.webhooks.mapping import MappingError, load_mapping, parse_mapping
from rules.file import RulesFileError, load_rules
from rules.textfile import read_regular
from store.held import HeldRow, held_row, record_held
from store.model import Quarantined
from store.schema import migrate
from store.writer import configure_connection
from tests.hostile_world import EVENTS_TOKEN, Hostile, hostile_server, now_iso, stock_event


@pytest.fixture
async def hostile(tmp_path: Path) -> Any:
    async with hostile_server(tmp_path) as served:
        yield served


# --- pure pieces -------------------------------------------------------------------------


def test_a_huge_exponent_is_refused_before_it_becomes_an_integer() -> None:
    # int(Decimal("1e100000")) takes most of a second, "1e400000" seconds: quadratic.
    for text in ("1e100000", "1e99999999", "-1e13"):
        with pytest.raises(PayloadError, match=r"line\.quantity: out of range"):
            integer({"quantity": text}, "quantity", "line")
    assert integer({"quantity": "1000000000000"}, "quantity") == 10**12
    assert integer({"quantity": "3"}, "quantity") == 3


@pytest.mark.parametrize("amount", ["1e400", 1e300, "1e29", "123456789012345678901234567890"])
def test_an_amount_past_decimal_precision_names_the_field(amount: object) -> None:
    with pytest.raises(PayloadError, match=r"line_items\[0\]\.price: amount out of range"):
        money({"price": amount}, "price", "line_items[0]")


def test_a_raw_line_separator_inside_a_string_does_not_split_the_line() -> None:
    first = stock_event(1)
    first["body"]["source_system"] = "a\u2028b\u2029c\x85d"
    body = (json.dumps(first, ensure_ascii=False) + "\n" + json.dumps(stock_event(2))).encode()
    lines = parse_events_body(body)
    assert [line.number for line in lines] == [1, 2]
    assert not any(isinstance(line.item, Quarantined) for line in lines), lines
    # One line, its text kept (each separator stored as a space: text keeps no control).
    assert lines[0].item.body.source_system == "a b c d"  # type: ignore[union-attr]


def test_a_body_of_too_many_events_is_refused_whole() -> None:
    one = json.dumps({"id": "x"})
    for body in (
        "\n".join([one] * (MAX_EVENTS + 1)),
        json.dumps([{"id": "x"}] * (MAX_EVENTS + 1)),
    ):
        with pytest.raises(PayloadError) as err:
            parse_events_body(body.encode())
        assert err.value.status == 413 and "send smaller batches" in str(err.value)
    assert len(parse_events_body("\n".join([one] * MAX_EVENTS).encode())) == MAX_EVENTS


def test_an_unreadable_body_over_64_kb_is_held_whole() -> None:
    order = {"id": 1, "line_items": [{"sku": f"S-{n}", "quantity": "ten"} for n in range(4000)]}
    body = json.dumps(order).encode()
    assert len(body) > 64 * 1024
    held = hold_for("shopify", Mapped(), body, error="shopify: line_items[0].quantity: ...")
    assert held is not None
    assert json.loads(held.raw) == order  # whole, so a fix and a replay can place it
    ((_, _, cut),) = held.quarantined
    assert len(cut) <= 64 * 1024  # the quarantine row stays bounded


def test_many_refused_lines_are_all_linked_to_their_held_copy(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    configure_connection(db)
    migrate(db)
    parts = [("events", f"POST /events line {n}: bad", f'{{"n": {n}}}') for n in range(3000)]
    parts += [parts[0]]  # the same refusal twice: two rows, two links
    db.executemany(
        "INSERT INTO quarantine (source, error, raw, received_at) VALUES (?, ?, ?, 0)", parts
    )
    items = [Quarantined(source=s, error=e, raw=r) for s, e, r in parts]
    held = hold_for("events", Mapped(items=list(items)), b"")
    assert held is not None
    held_id = record_held(db, held, 0)
    row: HeldRow | None = held_row(db, held_id)
    assert row is not None
    (ids,) = db.execute("SELECT quarantine_ids FROM held WHERE id = ?", (held_id,)).fetchone()
    linked = json.loads(ids)
    assert len(linked) == len(set(linked)) == len(parts)


def test_set_on_a_kept_line_that_is_not_json_is_a_clear_error(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    configure_connection(db)
    migrate(db)
    items = [
        Quarantined(source="events", error="line 1: bad", raw=json.dumps(stock_event(1))),
        Quarantined(source="events", error="line 2: not JSON", raw='{"id": "p3-b3", broken'),
    ]
    held = hold_for("events", Mapped(items=items), b"")
    assert held is not None
    row = held_row(db, record_held(db, held, 0))
    assert row is not None
    with pytest.raises(EditError, match="kept line 2 is not JSON"):
        set_fields(row, ["1.body.on_hand=3"])


@pytest.mark.parametrize("kind", ["fifo", "device", "large"])
def test_a_rules_or_mapping_file_that_is_no_regular_file_is_refused(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "rules.toml"
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: a blocking open would never return
    elif kind == "device":
        path.symlink_to("/dev/zero")  # read whole, it never ends
    else:
        path.write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\nalert = []\n")
    done: list[BaseException] = []

    def attempt() -> None:
        for load, error in ((load_rules, RulesFileError), (load_mapping, MappingError)):
            try:
                load(path)  # type: ignore[operator]
            except error as exc:
                done.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "reading the file blocked"
    expected = "too large" if kind == "large" else "not a regular file"
    assert len(done) == 2 and all(expected in str(exc) for exc in done), done
    assert str(path) in str(done[0]) and str(path) in str(done[1])
    if kind == "large":
        with pytest.raises(OSError, match="at most"):
            read_regular(path)


@pytest.mark.parametrize("value", ["inf", "99999999999"])
def test_a_mapping_cannot_set_an_sla_no_clock_can_hold(value: str) -> None:
    with pytest.raises(MappingError, match=r"shopify\.sla_hours"):
        parse_mapping(f"[shopify]\nsla_hours = {value}\n")


# --- over HTTP ---------------------------------------------------------------------------


async def test_a_signed_quantity_of_a_huge_exponent_answers_at_once(hostile: Hostile) -> None:
    level = {
        "inventory_item_id": 808950810,
        "location_id": 655441491,
        "available": "1e99999999",
        "updated_at": now_iso(timedelta(minutes=-5)),
    }
    status, answer = await asyncio.wait_for(
        hostile.shopify("inventory_levels/update", json.dumps(level).encode()), timeout=30
    )
    assert status == 422 and "available: out of range" in answer["error"], answer


ORDER: dict[str, Any] = {"destination_region": "NE", "lines": [{"sku": "A", "quantity": 1}]}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**ORDER, "at": "9999-12-31T23:59:59Z"}, 400, "at"),
        ({"location_id": "S", "cart": ORDER["lines"], "at": "0001-01-01T00:00:00Z"}, 400, "at"),
        ({**ORDER, "lines": [{"sku": "A", "quantity": 2**70}]}, 400, "lines.0.quantity"),
    ],
)
async def test_route_refuses_what_the_calendar_cannot_hold(
    hostile: Hostile, body: dict[str, Any], status: int, field: str
) -> None:
    got, answer = await hostile.post("/route", json.dumps(body).encode(), {})
    assert (got, answer.get("field")) == (status, field), answer


async def test_route_refuses_an_integer_of_thousands_of_digits(hostile: Hostile) -> None:
    digits = b"1" + b"0" * 4400
    raw = b'{"destination_region": "NE", "lines": [{"sku": "A", "quantity": ' + digits + b"}]}"
    status, answer = await hostile.post("/route", raw, {})
    assert status == 400 and answer["field"] == "body", answer


async def test_a_refused_line_is_quarantined_under_events_not_its_claim(hostile: Hostile) -> None:
    body = "\n".join(json.dumps({"id": f"c{n}", "source": f"junk-{n}"}) for n in range(50))
    status, _ = await hostile.events(body.encode())
    assert status == 422
    assert {source for source, _, _ in hostile.quarantine()} == {"events"}
    feeds = {row[0] for row in hostile.rows("SELECT feed FROM feed_state")}
    assert not any(feed.startswith("junk-") for feed in feeds), feeds


async def test_a_client_gone_mid_body_is_no_server_error(hostile: Hostile) -> None:
    host, port = hostile.server.url.removeprefix("http://").split(":")

    def abort() -> None:
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(
                b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b"Authorization: Bearer " + EVENTS_TOKEN.encode() + b'\r\n\r\n{"id"'
            )

    for _ in range(3):
        await asyncio.to_thread(abort)
    await asyncio.sleep(0.3)
    async with hostile.http.get("/metrics") as resp:
        text = await resp.text()
    requests = [line for line in text.splitlines() if "webhook_requests_total" in line]
    assert not any('status="500"' in line for line in requests), requests
    status, _ = await hostile.events(json.dumps(stock_event(1)).encode())
    assert status == 200


@pytest.mark.parametrize("path", ["/events", "/route"])
async def test_a_body_trickled_slower_than_the_timeout_is_answered_408(
    tmp_path: Path, path: str
) -> None:
    """Headers, then the body a few bytes at a time: the connection is not held forever."""
    async with hostile_server(tmp_path, body_timeout_seconds=0.4) as served:
        host, port = served.server.url.removeprefix("http://").split(":")

        def trickle() -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n".encode()
                    + b"Authorization: Bearer "
                    + EVENTS_TOKEN.encode()
                    + b'\r\n\r\n{"id"'
                )
                answer = b""
                for _ in range(40):  # a byte every 0.05 s: 2 s in all, were it read
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        break
                    conn.settimeout(0.05)
                    try:
                        chunk = conn.recv(4096)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    answer += chunk
                return answer

        answer = await asyncio.to_thread(trickle)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body not received within 0.4 s" in answer
        # The server goes on answering.
        status, _ = await served.events(json.dumps(stock_event(1)).encode())
        assert status == 200


def test_an_empty_mapping_file_is_refused_and_a_comment_is_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    for blank in ("", "  \n\n"):
        path.write_text(blank)
        with pytest.raises(MappingError, match="mapping file is empty; refused"):
            load_mapping(path)
    path.write_text("# nothing mapped yet\n")
    assert load_mapping(path).shopify.locations == {}


@pytest.mark.parametrize(
    ("sku", "code"),
    [
        ("APP-1001\x1b[2J", "U+001B at position 9"),  # ESC: clears an operator's screen
        ("APP-1001\n", "U+000A at position 9"),
        ("APP-\u200b1001", "U+200B at position 5"),  # zero-width space: a look-alike SKU
        ("\u202eAPP-1001", "U+202E at position 1"),  # right-to-left override
        ("APP\x001001", "U+0000 at position 4"),
        ("APP-1001\x9b", "U+009B at position 9"),  # CSI, the C1 form of ESC [
    ],
)
async def test_an_id_with_a_terminal_control_or_invisible_is_refused_by_name(
    hostile: Hostile, sku: str, code: str
) -> None:
    good, bad = stock_event(1), stock_event(2)
    bad["body"]["sku"] = sku
    status, answer = await hostile.events(f"{json.dumps(good)}\n{json.dumps(bad)}".encode())
    assert status == 422 and answer["outcome"] == "mixed", answer
    (held,) = hostile.quarantine()
    assert f"body.sku: holds a control or invisible character ({code})" in held[1], held
    assert hostile.rows("SELECT sku FROM stock") == [(good["body"]["sku"],)]


async def test_text_keeps_no_terminal_control(hostile: Hostile) -> None:
    """Free text is stored with controls as spaces and invisibles dropped, never refused."""
    event = stock_event(1)
    event["type"] = "stock.adjusted"
    event["body"] = {
        "sku": "APP-1001",
        "location_id": "WH-NJ",
        "delta": -1,
        "reason": "damaged\x1b]52;c;ZXZpbA==\x07 in\ntransit\u202e \u00a0caf\u00e9",
    }
    status, answer = await hostile.events(json.dumps(event).encode())
    assert status == 200, answer
    (reason,) = hostile.rows("SELECT reason FROM stock_adjustments")[0]
    assert reason == "damaged ]52;c;ZXZpbA==  in transit \u00a0caf\u00e9"
