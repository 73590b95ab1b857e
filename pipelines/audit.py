"""Data checks that Dagster asset checks (and tests) run on a stage's stats and outputs."""
from __future__ import annotations

import ipaddress
import re

from pipelines.io import read_documents

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


def unaccounted_stages(stats: dict) -> dict[str, tuple[int, int, int]]:
    """Stages where documents in != documents out + documents removed (should be none)."""
    return {name: (s["docs_in"], s["docs_out"], s["docs_removed"]) for name, s in stats.items()
            if s["docs_in"] != s["docs_out"] + s["docs_removed"]}


def language_share(path, languages) -> tuple[float, int]:
    """Share of documents whose `language` is one of `languages`, and the document count."""
    wanted, n, hits = set(languages), 0, 0
    for doc in read_documents([path]):
        n += 1
        hits += doc.metadata.get("language") in wanted
    return (hits / n if n else 0.0), n


def pii_residue(path, max_docs: int = 2000) -> dict[str, int]:
    """Emails and public IPv4 addresses left in the first `max_docs` documents."""
    found = {"emails": 0, "public_ipv4": 0, "docs_scanned": 0}
    for i, doc in enumerate(read_documents([path])):
        if i >= max_docs:
            break
        found["docs_scanned"] += 1
        found["emails"] += sum(1 for m in EMAIL.finditer(doc.text) if not _dummy_email(m.group()))
        found["public_ipv4"] += sum(1 for m in IPV4.finditer(doc.text) if _public_ip(m.group()))
    return found


def _public_ip(s: str) -> bool:
    from pipelines.pii import DUMMY_VALUES  # FineWeb's dummy IPs are public addresses themselves
    if s in DUMMY_VALUES:
        return False
    try:
        return ipaddress.ip_address(s).is_global
    except ValueError:
        return False


def _dummy_email(s: str) -> bool:
    """The replacement values themselves are not residue."""
    from pipelines.pii import DUMMY_VALUES
    return s in DUMMY_VALUES
