"""The weight of a real page around its text: head metadata, inline CSS and JavaScript, JSON-LD,
HTML comments, inline SVG icons, a mega-menu, tracking pixels, ad slots and link farms.

Real pages are mostly this. ../shared/realweb (1,310 real pages) has a median of 111 KB of HTML,
its Common-Crawl-like part (pages <= 100 KB, 588 of them) a median of 62 KB and ~500 tags, a fifth
of the bytes in <script>/<style>/comments, and main text 2-5% of the bytes (median 2.2% on its 476
gold pages); Common Crawl's pages average about 50 KB. The generated pages follow that:

- each page draws a weight from a log-normal: median 42 KB, sigma 0.7 (mean ~54 KB, p90 ~100 KB),
  clipped to 12 KB - 1 MB (Common Crawl truncates at 1 MiB);
- about a fifth of it (drawn per page, 8-45%) is inline CSS/JS/JSON-LD, the rest markup: navigation,
  footer and sidebar link lists whose items carry the long class lists, data attributes and
  tracking query strings of real CMS output (about one tag per 120 bytes, as realweb's);
- everything sits where real sites put it (<head>, <nav>, <aside>, <footer>, before </body>), none
  of it inside <article>, so the main text and every planted fate are unchanged.

The chrome has its own RNG, seeded by the page's site and title, so the content RNG, and with it
every page's text, is the same as without it. `weight=0` renders the light pages of old (~4 KB)
for tests that only need the planted text (generate_crawl(small_pages=True)).
"""
from __future__ import annotations

import html
import math
import random

MEDIAN_BYTES = 42_000
SIGMA = 0.7
MIN_BYTES, MAX_BYTES = 12_000, 1_000_000

_WORDS = ("news", "world", "business", "tech", "science", "health", "sport", "culture", "travel", "style",
          "opinion", "video", "podcasts", "local", "weather", "markets", "food", "books", "music", "games",
          "cars", "homes", "jobs", "education", "climate", "energy", "space", "ai", "security", "cloud")
_CLASSES = ("menu-item", "menu-item-type-taxonomy", "menu-item-object-category", "nav-link", "dropdown-item",
            "d-flex", "align-items-center", "px-3", "py-2", "text-sm", "font-medium", "hover:underline",
            "has-children", "js-track", "c-nav__link", "c-nav__item--primary", "is-active", "col-md-4",
            "widget", "widget_recent_entries", "list-unstyled", "mb-2", "flex-wrap", "gap-2", "lazyload")
_JS_WORDS = ("function", "return", "var", "const", "window", "document", "push", "length", "null", "this",
             "prototype", "addEventListener", "querySelector", "setTimeout", "dataLayer", "config", "typeof",
             "undefined", "Object", "assign", "forEach", "Promise", "then", "catch", "JSON", "parse")
_CSS_PROPS = ("margin", "padding", "display", "color", "font-size", "line-height", "border", "background",
              "width", "max-width", "position", "top", "left", "z-index", "opacity", "transition", "flex")
_COMMENTS = ("<!-- Google Tag Manager -->", "<!-- End Google Tag Manager -->", "<!-- wp:paragraph -->",
             "<!-- /wp:group -->", "<!-- Global site tag (gtag.js) -->", "<!-- cache: HIT -->",
             "<!-- This site is optimized with the Yoast SEO plugin -->", "<!-- .site-header -->",
             "<!-- ad slot: leaderboard -->", "<!-- Matomo -->", "<!-- #primary -->")


def page_weight(site: str, title: str) -> tuple[random.Random, int]:
    """The chrome's RNG and the page's target size in bytes (log-normal, see module doc)."""
    rng = random.Random(f"chrome|{site}|{title}")
    size = int(math.exp(rng.gauss(math.log(MEDIAN_BYTES), SIGMA)))
    return rng, max(MIN_BYTES, min(MAX_BYTES, size))


def _cls(rng: random.Random, k: int = 4) -> str:
    return " ".join(rng.sample(_CLASSES, k)) + f" menu-item-{rng.randrange(100, 99999)}"


def _href(rng: random.Random, site: str) -> str:
    path = "/".join(rng.sample(_WORDS, rng.randint(1, 3)))
    tail = rng.choice(("", f"?utm_source=nav&utm_medium=link&utm_campaign={rng.choice(_WORDS)}",
                       f"?ref=footer&id={rng.randrange(10**6)}", f"#section-{rng.randrange(100)}"))
    return f"https://{site}/{path}/{tail}"


def _link_item(rng: random.Random, site: str) -> str:
    label = " ".join(w.capitalize() for w in rng.sample(_WORDS, rng.randint(1, 3)))
    return (f'<li class="{_cls(rng)}" id="menu-item-{rng.randrange(10**5)}"><a class="{_cls(rng, 3)}" '
            f'href="{_href(rng, site)}" data-track="nav|{rng.choice(_WORDS)}|{rng.randrange(999)}" '
            f'aria-label="{label}"><span class="label">{label}</span></a></li>')


def _links(rng: random.Random, site: str, n: int) -> str:
    return "".join(_link_item(rng, site) for _ in range(n))


def _js(rng: random.Random, n_bytes: int) -> str:
    """Minified-looking JavaScript of about n_bytes (no '<', so no parser ever ends the script early)."""
    out, size = [], 0
    while size < n_bytes:
        a, b = rng.choice(_JS_WORDS), rng.choice(_JS_WORDS)
        piece = rng.choice((f"{a}.{b}(function(e,t){{return e&&t.{a}}});", f"var {a[:1]}{rng.randrange(99)}={b}||{{}};",
                            f'{a}["{b}"]={rng.randrange(10**6)};', f"if(typeof {a}!=='undefined'){{{b}({a})}}",
                            f'{a}.push({{"event":"{b}","id":"{rng.randrange(16**8):08x}"}});'))
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _css(rng: random.Random, n_bytes: int) -> str:
    out, size = [], 0
    while size < n_bytes:
        rule = (f".{rng.choice(_CLASSES).replace(':', '-')}-{rng.randrange(999)}{{"
                + ";".join(f"{p}:{rng.randrange(40)}px" for p in rng.sample(_CSS_PROPS, rng.randint(2, 6))) + "}")
        out.append(rule)
        size += len(rule)
    return "".join(out)


def _svg(rng: random.Random) -> str:
    d = " ".join(f"{rng.choice('MLCQ')}{rng.randrange(24)}.{rng.randrange(99)} {rng.randrange(24)}.{rng.randrange(99)}"
                 for _ in range(rng.randint(10, 40)))
    return f'<svg class="icon icon-{rng.choice(_WORDS)}" viewBox="0 0 24 24" aria-hidden="true"><path d="{d}z"/></svg>'


class Chrome:
    """The pieces of one page's extra weight, each placed by render_page where real sites put it."""

    def __init__(self, site: str, title: str, weight: float = 1.0):
        self.rng, target = page_weight(site, title)
        self.site = site
        target = int(target * weight)
        rng = self.rng
        code = int(target * rng.uniform(0.08, 0.45))          # inline CSS/JS/JSON-LD
        markup = max(0, target - code - 4_000)                  # the light page itself is ~4 KB
        # ~420 bytes per link item (li + a + span with CMS attributes): nav, sidebar, footer farm
        items = markup // 420
        self.nav_items = items * 5 // 10
        self.side_items = items * 2 // 10
        self.farm_items = items - self.nav_items - self.side_items
        self.css_bytes = code * 3 // 10
        self.js_head_bytes = code * 3 // 10
        self.js_tail_bytes = code - self.css_bytes - self.js_head_bytes

    def comment(self) -> str:
        return self.rng.choice(_COMMENTS)

    def head(self, title: str) -> str:
        rng, site = self.rng, self.site
        title = html.escape(title, quote=True)
        metas = "".join(f'<meta property="og:{k}" content="{v}">' for k, v in (
            ("type", "article"), ("site_name", site), ("title", title), ("url", f"https://{site}/"),
            ("image", f"https://cdn.{site}/img/{rng.randrange(16**10):010x}.jpg")))
        metas += f'<meta name="twitter:card" content="summary_large_image"><meta name="twitter:site" content="@{site.split(".")[0]}">'
        metas += "".join(f'<link rel="preload" as="script" href="https://cdn.{site}/js/{rng.randrange(16**8):08x}.js">'
                         for _ in range(rng.randint(2, 6)))
        ld = (f'<script type="application/ld+json">{{"@context":"https://schema.org","@type":"NewsArticle",'
              f'"headline":"{title}","publisher":{{"@type":"Organization","name":"{site}"}},'
              f'"datePublished":"2099-01-{rng.randint(1, 28):02d}"}}</script>')
        return (f"{self.comment()}{metas}{ld}<style>{_css(rng, self.css_bytes)}</style>"
                f"<script>{_js(rng, self.js_head_bytes)}</script>{self.comment()}")

    def nav(self) -> str:
        return (f'<nav class="mega-menu" aria-label="Sections">{self.comment()}<ul class="{_cls(self.rng)}">'
                f"{_links(self.rng, self.site, self.nav_items)}</ul>{_svg(self.rng)}</nav>")

    def sidebar(self) -> str:
        if not self.side_items:
            return ""
        return (f'<aside class="widget-area trending">{self.comment()}<ul class="{_cls(self.rng)}">'
                f"{_links(self.rng, self.site, self.side_items)}</ul></aside>")

    def footer(self) -> str:
        icons = "".join(_svg(self.rng) for _ in range(self.rng.randint(2, 5)))
        return (f'<footer class="site-footer network-links">{self.comment()}<div class="social">{icons}</div>'
                f'<ul class="{_cls(self.rng)}">{_links(self.rng, self.site, self.farm_items)}</ul></footer>')

    def tail(self) -> str:
        rng = self.rng
        return (f'<div class="ad-slot" id="div-gpt-ad-{rng.randrange(10**12)}-0" data-ad-unit="/{rng.randrange(10**8)}/'
                f'{rng.choice(_WORDS)}/leaderboard" data-sizes="[[728,90],[970,250]]"></div>'
                f'<noscript><img height="1" width="1" style="display:none" '
                f'src="https://px.{self.site}/tr?id={rng.randrange(10**15)}&amp;ev=PageView&amp;noscript=1"></noscript>'
                f"<script>{_js(rng, self.js_tail_bytes)}</script>{self.comment()}")
