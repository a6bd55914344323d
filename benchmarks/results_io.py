"""Where benchmark results go: ``NAME.json`` (the numbers) and ``NAME.md`` (the table the
README shows), written side by side and the table echoed to stdout."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, name: str, res: dict, table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    (out / f"{name}.md").write_text(table)
    print(table)
