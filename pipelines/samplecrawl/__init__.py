"""A realistic, deterministic sample crawl in real WARC files, with a ground-truth manifest.

    from pipelines.samplecrawl import generate_crawl
    info = generate_crawl("out/", pages=1000, seed=0)   # -> CrawlInfo

Modules: texts (prose sources), pages (HTML chrome), lowquality (one body per filter rule),
pii (planted values), plan (proportions), content (spec -> capture), warcwriter, crawl, cli.
"""
from pipelines.samplecrawl.crawl import CrawlInfo, generate_crawl

__all__ = ["generate_crawl", "CrawlInfo"]
