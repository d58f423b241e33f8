"""Progress of long commands: the bar's figures, the event estimate, a terminal vs a pipe."""

from __future__ import annotations

import gzip
import os
import pty
import subprocess
import sys
from pathlib import Path

from console.progress import progress_line, summary_line
from feeds.runtime.ingest import estimate_events, event_files

ROOT = Path(__file__).resolve().parent.parent
DAY = ROOT / "fixtures" / "day"
RETAIL = ROOT / "fixtures" / "payloads" / "online_retail" / "online_retail_first400.csv"


def test_progress_line_figures_by_hand() -> None:
    # 250 of 1,000 in 10 s: 25/s, 750 left -> 30 s; 24 cells x 25 % = 6 filled.
    line = progress_line("ingest", 250, 1000, 10.0)
    assert (
        line == "omniops ingest [######..................]  25% 250/1,000 events, 25/s, 30 s left"
    )
    # 3,000 left at 10/s is 300 s: shown in minutes.
    assert progress_line("ingest", 100, 3100, 10.0).endswith("10/s, 5 min left")
    # Unknown total: a count and a rate, no bar; done: no time left.
    assert progress_line("ingest", 42, None, 2.0) == "omniops ingest: 42 events, 21/s, 2 s"
    assert "left" not in progress_line("ingest", 1000, 1000, 4.0)
    # An estimate that came out low never shows more than 100 %.
    assert " 100% 1,200/1,200 " in progress_line("ingest", 1200, 1000, 4.0)
    assert summary_line("ingest", 500, 2.0) == "omniops ingest: 500 events in 2.0 s, 250/s"


def test_estimate_from_manifest_and_from_lines(tmp_path: Path) -> None:
    # The fixture day's manifest gives every file's count without reading it.
    assert estimate_events(event_files([DAY])) == 510_949
    # Without a manifest, lines are counted (plain and gzip alike).
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n{"x": 2}\n{"x": 3}\n', encoding="utf-8")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write('{"y": 1}\n' * 7)
    assert estimate_events(event_files([tmp_path])) == 10


def _omniops(*args: str, tty: bool, cwd: Path) -> tuple[int, str]:
    command = [sys.executable, "-m", "console.cli", *args]
    if not tty:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        command, cwd=cwd, stdin=follower, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_ingest_shows_a_bar_on_a_terminal_and_one_line_in_a_pipe(tmp_path: Path) -> None:
    folder = tmp_path / "feed"
    folder.mkdir()
    (folder / "catalog.jsonl.gz").write_bytes((DAY / "catalog.jsonl.gz").read_bytes())
    rc, out = _omniops("ingest", str(folder), "--db", str(tmp_path / "t.db"), tty=True, cwd=ROOT)
    assert rc == 0, out
    assert "omniops ingest [" in out and "322/322 events" in out and "100%" in out
    rc, err = _omniops("ingest", str(folder), "--db", str(tmp_path / "p.db"), tty=False, cwd=ROOT)
    assert rc == 0 and "\r" not in err
    assert err.startswith("omniops ingest: 322 events in ")


def test_import_history_reports_progress(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    rc, out = _omniops("import-history", str(RETAIL), "--db", db, tty=True, cwd=ROOT)
    assert rc == 0, out
    assert "omniops import-history [" in out and "100%" in out
    rc, err = _omniops(
        "import-history", str(RETAIL), "--db", str(tmp_path / "p.db"), tty=False, cwd=ROOT
    )
    assert rc == 0 and "\r" not in err
    assert "omniops import-history: " in err and " events in " in err
