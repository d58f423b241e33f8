"""The demo's own rules file: the shipped alert defaults plus the demo retailer's routing.

The demo writes its rules file next to its store on the first run, so the routing view,
the what-if and every routed order of the replayed day show the demo retailer's
fulfillment rules (``fixtures/demo-fulfillment.toml``) rather than the built-in defaults.
An operator's own file (``omniops demo --rules PATH``) is never touched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rules.file import default_rules_text

DEMO_FULFILLMENT = "demo-fulfillment.toml"
"""The routing section's file name, looked up beside the replayed fixture folder."""


def ensure_demo_rules(path: Path, fixtures: Path) -> bool:
    """Write the demo rules file at ``path`` unless it exists; True if it was written.

    Args:
        path: The demo's rules file (beside its store).
        fixtures: The replayed fixture folder; its parent may hold ``demo-fulfillment.toml``
            (without one, the file is the shipped defaults alone).
    """
    path = Path(path)
    if path.exists():
        return False
    text = default_rules_text()
    routing = Path(fixtures).parent / DEMO_FULFILLMENT
    if routing.is_file():
        text = text.rstrip("\n") + "\n\n" + routing.read_text(encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
