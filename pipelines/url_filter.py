"""URL filter, FineWeb (datatrove 2024) style: block lists and banned words, checked on the URL only.

Reasons, first match wins (fineweb-recipe.md, "URL filter"; pipelines/data/blocklists/README.md):
`domain`, `subdomain`, `url`, `hard_blacklisted`, `soft_blacklisted`, `blacklisted_subword`.

Two deliberate differences from datatrove, both because they make the lists do what they say:
- URL tokens are lowercased before comparing with the (lowercase) word lists; datatrove compares
  the raw tokens, so `/Hentai/` slipped through.
- the `url` check compares the URL normalized the way UT1 writes its `urls` files (no scheme,
  lowercase host, no `www.`, no trailing slash); datatrove compared the raw URL with its scheme to
  scheme-less list entries, so that check could never fire.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from pipelines.document import Document
from pipelines.errors import ConfigError
from pipelines.runner import Filter

log = logging.getLogger(__name__)

DEFAULT_BLOCKLIST_DIR = Path(__file__).parent / "data" / "blocklists"
WORD_FILES = {"hard": "hard_banned.txt", "soft": "soft_banned.txt", "subwords": "banned_subwords.txt"}

_NON_ALNUM = re.compile(r"[^a-z0-9]+")  # ASCII only, as datatrove: percent-escapes split into tokens
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_SCHEME_AUTHORITY = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://([^/?#]*)")


def canonical_url(url: str | None) -> str | None:
    """A WARC-Target-URI as the URL it names: the one form the reader stores and the filter checks.

    wget (and WARC/1.0's grammar) writes the URI in angle brackets, `<https://a.example/>`; some
    writers leave spaces around it; scheme and host are case-insensitive (RFC 3986). Left as they
    were, `<https://blocked.example/>` had `<https` for a host and got past every domain list, and
    the same page under two spellings was two URLs. Only those are changed: userinfo, path, query
    and fragment keep their case and bytes (they are case-sensitive)."""
    if url is None:
        return None
    u = url.strip()
    if u.startswith("<") and u.endswith(">"):
        u = u[1:-1].strip()
    m = _SCHEME_AUTHORITY.match(u)
    if m is None:
        return u
    userinfo, at, host = m.group(2).rpartition("@")
    return f"{m.group(1).lower()}://{userinfo}{at}{host.lower()}{u[m.end():]}"


def normalize_url(url: str) -> str:
    """`https://WWW.Example.com/a/b/?q#f` -> `example.com/a/b/?q` ... minus a trailing `/`: the UT1 form."""
    u = url.strip()
    m = _SCHEME.match(u)
    if m:
        u = u[m.end():]
    elif u.startswith("//"):
        u = u[2:]
    u = u.split("#", 1)[0]
    cut = min((i for i in (u.find("/"), u.find("?")) if i >= 0), default=len(u))
    host, rest = u[:cut].lower(), u[cut:]
    host = host.rsplit("@", 1)[-1].rstrip(".")  # no userinfo; "example.com." is example.com
    if host.startswith("www."):
        host = host[4:]
    return (host + rest).rstrip("/")


def url_host(url: str) -> str:
    """Lowercase host without scheme, userinfo, port or trailing dot."""
    u = url.strip()
    m = _SCHEME.match(u)
    u = u[m.end():] if m else u.lstrip("/")
    cut = min((i for i in (u.find("/"), u.find("?"), u.find("#")) if i >= 0), default=len(u))
    host = u[:cut].rsplit("@", 1)[-1].lower()
    if host.startswith("["):  # IPv6 literal: keep it whole, without the port
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0].rstrip(".")


def squash(text: str) -> str:
    """Lowercase, every non-alphanumeric removed: the string banned subwords are searched in."""
    return _NON_ALNUM.sub("", text.lower())


def url_tokens(url: str) -> set[str]:
    return {t for t in _NON_ALNUM.split(url.lower()) if t}


def read_list(path: Path) -> list[str]:
    """Lines of a UT1-style list, without blanks and `#` comments (UT1 files are mostly ASCII)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


class _SubwordMatcher:
    """Is any banned subword a substring of s? One pass: Aho-Corasick when pyahocorasick is there,
    else one compiled alternation (Python's regex engine tries all alternatives at each position,
    still a single scan, and fine for a few thousand words)."""

    def __init__(self, words: Iterable[str]):
        words = sorted({w for w in words if w})
        self._auto = None
        self._regex = None
        if not words:
            return
        try:
            import ahocorasick
        except ImportError:
            self._regex = re.compile("|".join(map(re.escape, sorted(words, key=len, reverse=True))))
            return
        self._auto = ahocorasick.Automaton()
        for w in words:
            self._auto.add_word(w, w)
        self._auto.make_automaton()

    @property
    def backend(self) -> str:
        return "pyahocorasick" if self._auto is not None else "regex" if self._regex is not None else "none"

    def search(self, s: str) -> str | None:
        if self._auto is not None:
            for _, word in self._auto.iter(s):
                return word
            return None
        if self._regex is not None:
            m = self._regex.search(s)
            return m.group(0) if m else None
        return None


class URLFilter(Filter):
    name = "url_filter"

    def __init__(self, blocklist_dir: str | Path | None = None, soft_banned_min: int = 2,
                 categories: list[str] | None = None, extra_domains: Iterable[str] = (),
                 extra_urls: Iterable[str] = (), extra_hard_banned: Iterable[str] = (),
                 extra_soft_banned: Iterable[str] = (), extra_banned_subwords: Iterable[str] = ()):
        self.blocklist_dir = Path(blocklist_dir) if blocklist_dir else DEFAULT_BLOCKLIST_DIR
        self.soft_banned_min = int(soft_banned_min)
        self.categories = list(categories) if categories else None
        self.domains: set[str] = {d.lower().rstrip(".") for d in extra_domains}
        self.urls: set[str] = {normalize_url(u) for u in extra_urls}
        for cat in self._category_dirs():
            self.domains.update(d.lower().rstrip(".") for d in read_list(cat / "domains"))
            self.urls.update(normalize_url(u) for u in read_list(cat / "urls"))
        # word lists: the configured folder's words/ if it has one, else the shipped ones
        words_dir = self.blocklist_dir / "words"
        if not words_dir.is_dir():
            words_dir = DEFAULT_BLOCKLIST_DIR / "words"
        lists = {k: read_list(words_dir / f) for k, f in WORD_FILES.items()}
        # words are squashed like datatrove's: a listed "xxx videos" means the token "xxxvideos"
        self.hard_banned = {squash(w) for w in [*lists["hard"], *extra_hard_banned]} - {""}
        self.soft_banned = {squash(w) for w in [*lists["soft"], *extra_soft_banned]} - {""}
        self.banned_subwords = {squash(w) for w in [*lists["subwords"], *extra_banned_subwords]} - {""}
        self._subwords = _SubwordMatcher(self.banned_subwords)
        self._tld = _tld_extractor()
        self._registered = lru_cache(maxsize=65536)(self._registered_domain)
        log.info("url_filter: %d domains/hosts, %d urls, %d hard / %d soft / %d sub-words (%s) from %s",
                 len(self.domains), len(self.urls), len(self.hard_banned), len(self.soft_banned),
                 len(self.banned_subwords), self._subwords.backend, self.blocklist_dir)

    def _category_dirs(self) -> list[Path]:
        # a config mistake: one line for the user (errors.py), not a traceback from a worker
        if not self.blocklist_dir.is_dir():
            raise ConfigError(f"url_filter.blocklist_dir: {self.blocklist_dir} is not a folder (a UT1-layout "
                              "folder of category/{domains,urls}; null for the shipped lists)")
        if self.categories is not None:
            missing = [c for c in self.categories if not (self.blocklist_dir / c).is_dir()]
            if missing:
                raise ConfigError(f"url_filter.categories: {', '.join(missing)} not a folder in {self.blocklist_dir}")
            return [self.blocklist_dir / c for c in self.categories]
        return sorted(p for p in self.blocklist_dir.iterdir()
                      if p.is_dir() and p.name != "words" and not p.name.startswith((".", "_")))

    def _registered_domain(self, host: str) -> str:
        ext = self._tld.extract_str(host) if hasattr(self._tld, "extract_str") else self._tld(host)
        reg = getattr(ext, "top_domain_under_public_suffix", None)  # tldextract >= 5.3 name
        return (reg if reg is not None else ext.registered_domain) or ""

    def check(self, url: str) -> str | None:
        """The drop reason for `url`, or None to keep it."""
        url = canonical_url(url)  # the reader stores it so; documents from elsewhere may not be
        host = url_host(url)
        if host:
            registered = self._registered(host)
            if registered and registered in self.domains:
                return "domain"
            if host in self.domains or (host.startswith("www.") and host[4:] in self.domains
                                        and host[4:] != registered):
                return "subdomain"
        if self.urls and normalize_url(url) in self.urls:
            return "url"
        tokens = url_tokens(url)
        if not self.hard_banned.isdisjoint(tokens):
            return "hard_blacklisted"
        if len(self.soft_banned & tokens) >= self.soft_banned_min:
            return "soft_blacklisted"
        if self._subwords.search(squash(url)) is not None:
            return "blacklisted_subword"
        return None

    def filter(self, doc: Document):
        url = doc.metadata.get("url")
        if not url:  # nothing to judge; the WARC reader always sets it
            return True
        reason = self.check(url)
        return True if reason is None else (False, reason)

    def config(self) -> dict:
        return {"blocklist_dir": str(self.blocklist_dir), "soft_banned_min": self.soft_banned_min,
                "categories": self.categories, "n_domains": len(self.domains), "n_urls": len(self.urls),
                "n_hard_banned": len(self.hard_banned), "n_soft_banned": len(self.soft_banned),
                "n_banned_subwords": len(self.banned_subwords), "subword_backend": self._subwords.backend}


@lru_cache(maxsize=1)
def _tld_extractor():
    """tldextract on its bundled public-suffix snapshot: no suffix-list download, ever
    (environment.md: the default fetches it over the network on first use)."""
    import tldextract
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False)
