"""HTML around the main content: what a real page carries and an extractor has to strip.

Every page gets a cookie banner, a header with navigation, one or two sidebars, ad slots, a
comment section and a footer, with variations (class names, order, which pieces appear) drawn
from the page's RNG, so boilerplate is not one fixed string an extractor could learn by heart.
The main content always sits in `<article>` as `<h1>` + `<p>` elements: the extraction stage
must find it, and low-quality pages must reach the quality filters intact.
"""
from __future__ import annotations

import html
import random

from pipelines.samplecrawl.boilerplate import Chrome
from pipelines.samplecrawl.texts import FIRST_NAMES, FOREIGN_CHROME, LAST_NAMES

_NAV_EN = ("Home", "News", "Tutorials", "Reviews", "About", "Contact", "Archive", "Topics", "Shop")
_SIDEBAR_EN = ("Popular posts", "Categories", "Recent articles", "Tags", "Trending now")
_LINK_WORDS = ("Getting started with testing", "Ten tips for faster builds", "Release notes",
               "Why types matter", "Inside the interpreter", "Packaging in practice",
               "A tour of the standard library", "Debugging stories", "Weekly roundup")
_COMMENTS_EN = ("Great article, thanks for sharing!", "This helped me fix a bug at work today.",
                "I think the second example is wrong, could you double check it?",
                "Bookmarked. Looking forward to the next part of the series.",
                "Does this also apply to older versions?", "Nice write-up, very clear.")
_ADS = ("Sponsored: Upgrade your hosting plan today and save 30%.",
        "Advertisement", "Try our premium course free for 14 days.",
        "Buy now: the best laptops of the year at unbeatable prices.")


def esc(text: str) -> str:
    return html.escape(text, quote=False)


def _links(rng: random.Random, words, n: int) -> str:
    items = rng.sample(list(words), min(n, len(words)))
    return "".join(f'<li><a href="/{_slug(w)}">{esc(w)}</a></li>' for w in items)


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text if c.isascii())
    return "-".join(p for p in out.split("-") if p)[:60] or "page"


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def render_page(rng: random.Random, *, site: str, title: str, paragraphs: list[str], lang: str = "en",
                date_text: str = "", charset: str = "utf-8", meta_charset: bool = True,
                extra_main_html: str = "", byline: str | None = None, headings: dict[int, str] | None = None,
                ads: bool = True, weight: float = 1.0) -> str:
    """A full HTML page; `paragraphs` are the article body, already plain text (escaped here).

    `headings` maps a paragraph index to an <h2> placed before it; `extra_main_html` is raw
    HTML appended inside the article (for list-heavy or code-heavy low-quality pages).
    `weight` scales the real-page chrome around it (boilerplate.py; 0: none, a ~4 KB page).
    """
    headings = headings or {}
    chrome = Chrome(site, title, weight) if weight > 0 else None
    if lang == "en":
        nav, side_title, home, contact = _NAV_EN, rng.choice(_SIDEBAR_EN), "Home", "Contact"
        rights, also = "All rights reserved.", "Read next"
    else:
        home, news, contact, rights, also = FOREIGN_CHROME[lang]
        nav, side_title = (home, news, contact), also
    parts = ['<!DOCTYPE html>', f'<html lang="{lang}">', "<head>"]
    if meta_charset:
        parts.append(f'<meta charset="{charset}">' if rng.random() < 0.5 else
                     f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">')
    parts += [f"<title>{esc(title)} | {esc(site)}</title>",
              '<meta name="viewport" content="width=device-width, initial-scale=1">',
              f'<link rel="stylesheet" href="/static/css/main.{rng.randrange(16**6):06x}.css">',
              "<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}"
              f"gtag('config','G-{rng.randrange(10**8):08d}');</script>"]
    if chrome:
        parts.append(chrome.head(title))
    parts += ["</head>", f'<body class="{rng.choice(["post", "article-page", "single", "blog"])}">']
    if lang == "en" and rng.random() < 0.8:
        parts.append('<div id="cookie-banner" class="cookie-consent"><p>This website uses cookies to '
                     'improve your experience. See our <a href="/privacy">privacy policy</a>.</p>'
                     '<button class="accept">Accept all</button></div>')
    parts.append(f'<header class="site-header"><a class="logo" href="/">{esc(site)}</a>'
                 f'<nav class="main-nav"><ul>{_links(rng, nav, 6)}</ul></nav>'
                 '<form class="search" action="/search"><input name="q" placeholder="Search"></form>'
                 f'{chrome.nav() if chrome else ""}</header>')
    parts.append('<div class="container">')
    if rng.random() < 0.6:
        parts.append(f'<aside class="sidebar sidebar-left"><h3>{esc(side_title)}</h3>'
                     f'<ul>{_links(rng, _LINK_WORDS if lang == "en" else nav, 5)}</ul></aside>')
    parts.append('<main id="content">')
    if ads and rng.random() < 0.5:
        parts.append(f'<div class="ad ad-top" data-slot="{rng.randrange(1000)}">{esc(rng.choice(_ADS))}</div>')
    parts.append('<article class="post-content">')
    parts.append(f"<h1>{esc(title)}</h1>")
    if byline is None and lang == "en":
        byline = f"By {person(rng)}"
    if byline:
        parts.append(f'<div class="byline"><span class="author">{esc(byline)}</span>'
                     f'<time>{esc(date_text)}</time></div>')
    for i, para in enumerate(paragraphs):
        if i in headings:
            parts.append(f"<h2>{esc(headings[i])}</h2>")
        parts.append(f"<p>{esc(para)}</p>")
    parts.append(extra_main_html)
    parts.append("</article>")
    if ads and rng.random() < 0.5:
        parts.append(f'<div class="ad ad-inline">{esc(rng.choice(_ADS))}</div>')
    if lang == "en" and rng.random() < 0.7:
        comments = "".join(f'<div class="comment"><p class="comment-author">{esc(person(rng))}</p>'
                           f"<p>{esc(c)}</p></div>" for c in rng.sample(_COMMENTS_EN, rng.randint(1, 3)))
        parts.append(f'<section id="comments" class="comments"><h3>Comments</h3>{comments}'
                     '<form class="comment-form"><textarea name="comment"></textarea>'
                     '<button>Post comment</button></form></section>')
    parts.append("</main>")
    if rng.random() < 0.7:
        parts.append(f'<aside class="sidebar sidebar-right"><h3>{esc(also)}</h3>'
                     f'<ul>{_links(rng, _LINK_WORDS if lang == "en" else nav, 4)}</ul>'
                     '<div class="newsletter">Subscribe to our newsletter</div></aside>')
    if chrome:
        parts.append(chrome.sidebar())
    parts.append("</div>")
    footer_links = ("Terms of use", "Privacy policy", "Cookie settings", "Imprint") if lang == "en" else (contact,)
    parts.append(f'<footer class="site-footer"><ul>{_links(rng, footer_links, 4)}</ul>'
                 f"<p>&copy; {esc(site)}. {esc(rights)}</p></footer>")
    if chrome:
        parts += [chrome.footer(), chrome.tail()]
    parts.append("</body></html>")
    return "\n".join(parts)


def broken_html(rng: random.Random, page: str) -> str:
    """A malformed body: unclosed tags, a stray fragment, or a body cut mid-tag (truncated fetch)."""
    kind = rng.randrange(3)
    if kind == 0:  # truncated mid-document, mid-tag
        cut = rng.randrange(len(page) // 3, len(page) * 2 // 3)
        return page[:cut] + '<div class="'
    if kind == 1:  # closing tags dropped, nesting broken
        return page.replace("</p>", "").replace("</div>", "").replace("</article>", "<p><b><i>")
    return "<html><body><p>" + page[: len(page) // 2].replace("<", "&lt;<") + "</td></tr>"
