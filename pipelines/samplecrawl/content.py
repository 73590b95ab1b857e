"""Turn planned specs into captures: URL, HTTP status and headers, body bytes and ground truth."""
from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass, field

from pipelines.samplecrawl import lowquality, pages, pii
from pipelines.samplecrawl.plan import Spec
from pipelines.samplecrawl.texts import (FOREIGN, FOREIGN_TLDS, HOST_WORDS, TITLE_PREFIXES, TLDS, ProseDeck,
                                         foreign_paragraphs)

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 404: "Not Found", 500: "Internal Server Error"}

# Planted URLs per URL-filter reason; they match pipelines/data/blocklists (README examples).
BLOCKED_URLS = {
    "domain": ["https://www.pornhub.com/view_video.php?viewkey=ph{n:x}", "https://de.xhamster.com/videos/clip-{n}",
               "http://sexcams-example.net/room/{n}", "https://www.xvideos.com/video{n}/page",
               "https://chaturbate.com/room{n}/"],
    "subdomain": ["https://nsfw.imgshare-example.net/gallery/{n}", "http://adult.freehost-example.org/page{n}.html"],
    "url": ["https://www.forum-example.org/threads/after-dark-lounge/", "http://photos-example.com/albums/private-collection",
            "https://blog-example.net/2019/05/uncensored-gallery"],
    "hard_blacklisted": ["https://www.funpics-example.com/gallery/hentai/page-{n}",
                         "http://clips-example.net/top-pornstars-{n}.html", "https://www.pics-example.org/milf/{n}"],
    "soft_blacklisted": ["https://www.photoblog-example.com/nude/beach-sexy-pics-{n}",
                         "http://www.escort-example.com/naked-city-tours/{n}", "https://www.videos-example.net/busty/babes-{n}"],
    "blacklisted_subword": ["https://videos.bestxnxxclips.net/watch/{n}", "http://www.myfreeporntube-example.com/latest/{n}",
                            "https://www.clipsxvideosfans-example.org/{n}"],
}
NEGATIVE_URLS = ["https://www.artmuseum-example.org/collections/nude-studies", "https://www.city-example.gov/adult-education/courses",
                 "https://www.visit-sussex-example.co.uk/essex-day-trips", "https://www.imgshare-example.net/gallery/42",
                 "https://www.forum-example.org/threads/gardening-tips"]


@dataclass
class Capture:
    url: str
    body: bytes
    category: str
    status: int = 200
    mime: str | None = "text/html"
    charset: str | None = "utf-8"
    header_charset: bool = True
    language: str | None = "en"
    fate: str = "kept"
    stage: str | None = None
    reason: str | None = None
    dup_cluster: str | None = None
    pii: list = field(default_factory=list)
    location: str | None = None
    truncated: bool = False
    quirks: list = field(default_factory=list)  # reader quirks planted in its record (crawl.QUIRKS)

    def content_type_header(self) -> str | None:
        if self.mime is None:
            return None
        if self.charset and self.header_charset:
            return f"{self.mime}; charset={self.charset}"
        return self.mime


class Builder:
    def __init__(self, rng: random.Random, year: int, weight: float = 1.0):
        self.rng = rng
        self.weight = weight  # real-page chrome around the text (boilerplate.py); 0: light ~4 KB pages
        self.deck = ProseDeck(rng)
        self.year = year
        self._n = 0

    # --- helpers --------------------------------------------------------------------------------
    def _host(self, lang: str = "en") -> str:
        r = self.rng
        tld = FOREIGN_TLDS[lang] if lang != "en" else r.choice(TLDS)
        sub = r.choice(("www.", "www.", "", "blog.", "docs.", "news."))
        return f"{sub}{r.choice(HOST_WORDS)}{r.choice(('', '-hub', '-blog', 'online', '-notes'))}.{tld}"

    def _url(self, host: str, title: str) -> str:
        self._n += 1
        r = self.rng
        slug = pages._slug(title)
        return r.choice((f"https://{host}/{self.year}/{r.randint(1, 12):02d}/{slug}-{self._n}",
                         f"https://{host}/blog/{slug}-{self._n}", f"http://{host}/articles/{self._n}/{slug}",
                         f"https://{host}/p/{self._n}?ref=home"))

    def _date(self) -> str:
        return f"{self.rng.choice(_MONTHS)} {self.rng.randint(1, 28)}, {self.year}"

    def _title(self, paragraphs: list[str]) -> str:
        words = re.findall(r"[A-Za-z]+", paragraphs[0])
        topic = " ".join(w.lower() for w in words[1:5]) or "python"
        return f"{self.rng.choice(TITLE_PREFIXES)} {topic}"

    def _article(self, n_min=4, n_max=8) -> tuple[str, list[str]]:
        paras = self.deck.take(self.rng.randint(n_min, n_max))
        # C4 wants >= 5 sentences after line cleaning: a good page has comfortably more.
        while sum(len(re.findall(r"[.!?](?:\s|$)", p)) for p in paras) < 8:
            paras += self.deck.take(1)
        return self._title(paras), paras

    def _html(self, host, title, paras, lang="en", charset="utf-8", **kw) -> str:
        heads = {}
        if lang == "en" and len(paras) > 4 and self.rng.random() < 0.5:
            heads[len(paras) // 2] = self.rng.choice(("Details", "In practice", "A closer look", "Going further"))
        return pages.render_page(self.rng, site=host, title=title, paragraphs=paras, lang=lang,
                                 charset=charset, date_text=self._date(), headings=heads, weight=self.weight, **kw)

    def _good(self, category: str, paras_extra: list[str] | None = None, url: str | None = None) -> Capture:
        title, paras = self._article()
        if paras_extra:
            for s in paras_extra:
                paras.insert(self.rng.randint(1, len(paras)), s)
        host = self._host()
        url = url or self._url(host, title)
        host = url.split("/")[2]
        return Capture(url, self._html(host, title, paras).encode("utf-8"), category)

    # --- categories -----------------------------------------------------------------------------
    def build(self, spec: Spec) -> list[Capture]:
        self.deck.new_page()
        return getattr(self, "_make_" + spec.category)(spec)

    def _make_good(self, spec):
        return [self._good("good")]

    def _make_pii(self, spec):
        sents, found = pii.pii_sentences(self.rng)
        cap = self._good("pii", paras_extra=[" ".join(sents)])
        cap.pii = found
        return [cap]

    def _make_foreign(self, spec):
        lang = spec.sub
        paras = foreign_paragraphs(lang, self.rng, self.rng.randint(4, 6))
        title = FOREIGN[lang][self.rng.randrange(len(FOREIGN[lang]))].rstrip(".。")
        host = self._host(lang)
        body = self._html(host, title, paras, lang=lang, byline="").encode("utf-8")
        return [Capture(self._url(host, "article"), body, "foreign", language=lang, fate="dropped",
                        stage="language", reason="wrong_language")]

    def _make_low_quality(self, spec):
        stage, reason = spec.sub
        title, paras, extra = lowquality.make_low_quality(reason, self.rng, self.deck)
        host = self._host()
        # No ad slots: next to a thin body an extractor keeps them, which would move the numbers
        # a page is calibrated on (cookie banner, nav, sidebars and comments stay).
        body = self._html(host, title, paras, byline="", extra_main_html=extra, ads=False).encode("utf-8")
        return [Capture(self._url(host, title), body, "low_quality", fate="dropped", stage=stage, reason=reason)]

    def _make_near_duplicate(self, spec):
        # Long enough (>= 450 words) that one swapped sentence and a date line keep the copies at
        # Jaccard ~0.9, where 14x8 LSH catches a pair almost surely; same <h2> in every copy.
        title, paras = self._article(7, 9)
        while sum(len(p.split()) for p in paras) < 450:
            paras += self.deck.take(1)
        heads = {len(paras) // 2: "Details"} if self.rng.random() < 0.5 else {}
        cluster = f"near-{self._n}"
        out = []
        for i in range(spec.size):
            p = list(paras)
            if i:  # syndicated copy: another site's chrome, one sentence swapped, its own date line
                multi = [j for j, x in enumerate(p) if len(re.split(r"(?<=[.!?])\s+", x)) > 1] or [0]
                j = self.rng.choice(multi)
                sents = re.split(r"(?<=[.!?])\s+", p[j])
                sents[self.rng.randrange(len(sents))] = self.rng.choice(
                    ("This article was first published by our partner site.",
                     "Readers have since pointed out a few related cases.",
                     "The original text has been shortened slightly."))
                p[j] = " ".join(sents)
            p.append(f"This story was originally published on {self._date()} and updated since.")
            host = self._host()
            html = pages.render_page(self.rng, site=host, title=title, paragraphs=p, date_text=self._date(),
                                     headings=heads, weight=self.weight)
            cap = Capture(self._url(host, title), html.encode("utf-8"), "near_duplicate")
            cap.dup_cluster = cluster
            out.append(cap)
        return out

    def _make_exact_duplicate(self, spec):
        title, paras = self._article(5, 8)
        host = self._host()
        body = self._html(host, title, paras).encode("utf-8")
        first = self._url(host, title)
        cluster = f"exact-{self._n}"
        # the same page at a second URL: a tracking parameter, as feeds and newsletters create
        urls = [first, first + ("&" if "?" in first else "?") + "utm_source=newsletter&utm_medium=email"]
        return [Capture(u, body, "exact_duplicate", dup_cluster=cluster) for u in urls]

    def _make_url_blocked(self, spec):
        reason = spec.sub
        tmpl = self.rng.choice(BLOCKED_URLS[reason])
        cap = self._good("url_blocked", url=tmpl.format(n=self.rng.randint(2, 99999)))
        cap.fate, cap.stage, cap.reason = "dropped", "url_filter", reason
        return [cap]

    def _make_url_negative(self, spec):
        return [self._good("url_negative", url=self.rng.choice(NEGATIVE_URLS) + f"?page={self.rng.randint(2, 50)}")]

    def _make_non_html(self, spec):
        mime = spec.sub
        host = self._host()
        if mime == "application/pdf":
            body, ext = _tiny_pdf(self.deck.take(1)[0][:200]), "pdf"
        elif mime == "image/png":
            body, ext = _tiny_png(self.rng), "png"
        else:
            body = json.dumps({"items": [{"id": i, "name": self.rng.choice(HOST_WORDS)} for i in range(5)]},
                              sort_keys=True).encode()
            ext = "json"
        url = f"https://{host}/files/{self._n + 1}.{ext}"
        self._n += 1
        return [Capture(url, body, "non_html", mime=mime, charset=None, language=None, fate="dropped",
                        stage="warc_reader", reason="non_html")]

    def _make_http_status(self, spec):
        status = spec.sub
        host = self._host()
        url = self._url(host, "page")
        location = None
        if status in (301, 302):
            location = f"https://{host}/new/{self._n}"
            body = f'<html><body><h1>{_REASONS[status]}</h1><p>The document has moved <a href="{location}">here</a>.</p></body></html>'
        elif status == 404:
            body = "<html><head><title>404 Not Found</title></head><body><h1>Page not found</h1><p>Sorry, the page you are looking for does not exist.</p></body></html>"
        else:
            body = "<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1><p>The server encountered an error and could not complete your request.</p></body></html>"
        return [Capture(url, body.encode(), "http_status", status=status, language=None, fate="dropped",
                        stage="warc_reader", reason="http_status", location=location)]

    def _make_charset(self, spec):
        cs = spec.sub
        r = self.rng
        declared = r.randrange(3)  # 0: header only, 1: meta only, 2: both
        if cs == "windows-1252":
            title, paras = self._article()
            paras = [p.encode("cp1252", "replace").decode("cp1252") for p in paras]
            paras[0] = "Caf\u00e9 owners, na\u00efve r\u00e9sum\u00e9s and \u201csmart quotes\u201d \u2014 " + paras[0]
            lang, fate, stage, reason = "en", "kept", None, None
        else:
            lang = "ja" if cs == "shift_jis" else "zh"
            paras = foreign_paragraphs(lang, r, r.randint(4, 6))
            title = FOREIGN[lang][0].rstrip("。")
            fate, stage, reason = "dropped", "language", "wrong_language"
        host = self._host(lang)
        html = self._html(host, title, paras, lang=lang, charset=cs.upper() if cs != "windows-1252" else cs,
                          meta_charset=declared > 0, byline="" if lang != "en" else None)
        return [Capture(self._url(host, title), html.encode(cs), "charset", charset=cs, header_charset=declared != 1,
                        language=lang, fate=fate, stage=stage, reason=reason)]

    def _make_malformed(self, spec):
        cap = self._good("malformed")
        html = pages.broken_html(self.rng, cap.body.decode("utf-8"))
        cap.body = html.encode("utf-8")
        cap.truncated = html.endswith('<div class="')
        cap.fate = "any"
        return [cap]



def _tiny_pdf(text: str) -> bytes:
    text = re.sub(r"[()\\]", "", text)
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1", "replace")
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out


def _tiny_png(rng: random.Random) -> bytes:
    import struct

    w = h = 8
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(w * 3)) for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
