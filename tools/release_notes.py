"""Print the CHANGELOG.md section of one version (the GitHub release's text); exit 1 if there is none.

Usage: ``python tools/release_notes.py 0.1.0 [CHANGELOG.md]``
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def section(changelog: str, version: str) -> str:
    """The body under ``## [version] - YYYY-MM-DD`` up to the next ``## `` heading."""
    heading = re.compile(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}[ \t]*$", re.M)
    found = heading.search(changelog)
    if found is None:
        raise LookupError(f"CHANGELOG.md has no '## [{version}] - YYYY-MM-DD' section")
    rest = changelog[found.end() :]
    following = re.search(r"^## ", rest, re.M)
    body = rest[: following.start()] if following else rest
    if not body.strip():
        raise LookupError(f"the CHANGELOG.md section of {version} is empty")
    return body.strip() + "\n"


def main(argv: list[str]) -> int:
    version = argv[0]
    path = Path(argv[1] if len(argv) > 1 else "CHANGELOG.md")
    try:
        sys.stdout.write(section(path.read_text(encoding="utf-8"), version))
    except LookupError as e:
        print(f"release_notes: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
