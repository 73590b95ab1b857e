"""Small typed resources: where the lake is, which crawl to read, how to reach Spark, which data
config to apply, which model serves chat. MLflow lineage lives in assets/lineage.py."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field, PrivateAttr

from pipelines.lake import CrawlLake
from training.engine.chat_cli import DEFAULT_MODEL as DEFAULT_CHAT_MODEL, DEFAULT_SYSTEM, SAMPLING_DEFAULTS


class LakeResource(dg.ConfigurableResource):
    """The data lake root (a local path in the embedded default)."""

    root: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_LAKE", str(Path.cwd() / "lake")))

    def crawl(self, crawl: str) -> CrawlLake:
        return CrawlLake(Path(self.root), crawl)


class CrawlSource(dg.ConfigurableResource):
    """Which crawl to read and from where: the public Common Crawl endpoint, any mirror, or a
    local folder laid out like the bucket (the generated sample crawl)."""

    crawl: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_CRAWL", "CC-MAIN-2099-01"))
    base_url: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_CRAWL_SOURCE",
                                                                 "https://data.commoncrawl.org/"))
    files_per_batch: int = 4      # 0: one batch per segment
    register_files: Optional[int] = None  # crawl_manifest batches this many files (None: all listed)
    nightly_files: int = 8        # the nightly schedule takes the next N unprocessed files
    download_workers: int = 4


class DataConfigResource(dg.ConfigurableResource):
    """The data stages' config file (None: pipelines/configs/fineweb_v1.yaml)."""

    config_file: Optional[str] = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_DATA_CONFIG"))

    def load(self) -> dict:
        from pipelines.config import load_config
        return load_config(self.config_file)


class SparkResource(dg.ConfigurableResource):
    """A SparkSession built from config: `local[*]` by default, any master URL, or a Spark Connect
    remote. Built lazily (only steps that use Spark pay its start-up) and stopped when the
    execution scope ends: the step, or the run under the in-process executor."""

    master: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_SPARK_MASTER", "local[*]"))
    remote: Optional[str] = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_SPARK_REMOTE"))
    conf: dict[str, str] = {}
    _session = PrivateAttr(default=None)

    def session(self):
        if self._session is None:
            from pipelines.spark.session import build_spark_session
            self._session = build_spark_session(master=self.master, remote=self.remote,
                                                conf=dict(self.conf))
        return self._session

    @contextmanager
    def yield_for_execution(self, context):
        try:
            yield self
        finally:
            if self._session is not None:
                self._session.stop()
                self._session = None


class ChatModel(dg.ConfigurableResource):
    """The model that serves chat and its sampling defaults. `model` is a registered MLflow model
    (NAME@ALIAS, NAME/VERSION: moving the alias to a new version changes what serves, with no code
    or config change) or an export directory. The registry is MLFLOW_TRACKING_URI, by default the
    same SQLite file the assets' lineage writes to."""

    model: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_CHAT_MODEL", DEFAULT_CHAT_MODEL))
    system_prompt: str = DEFAULT_SYSTEM
    temperature: float = SAMPLING_DEFAULTS["temperature"]
    top_k: Optional[int] = SAMPLING_DEFAULTS["top_k"]
    top_p: Optional[float] = SAMPLING_DEFAULTS["top_p"]
    max_tokens: int = SAMPLING_DEFAULTS["max_tokens"]
    seed: Optional[int] = SAMPLING_DEFAULTS["seed"]
    device: Optional[str] = None   # None: cuda if available, else cpu

    def sampling(self):
        from training.engine.engine import SamplingParams
        params = SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p, seed=self.seed)
        params.validate()
        return params

    def load(self, search_index: Optional[str] = None, tools: bool = True):
        """An Engine for `model` with the python tool, and search over `search_index` when given."""
        from training.engine.chat_cli import load_engine
        from training.engine.tools import default_tools
        return load_engine(self.model, default_tools(search_index) if tools else {}, self.device)
