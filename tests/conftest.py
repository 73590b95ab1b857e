"""Fixtures shared by many test modules."""
import os

import pytest


def pytest_configure(config):
    """Under `make test`'s two xdist workers every torch user gets one intra-op thread, in this
    process and in the jobs it launches (OMP_NUM_THREADS is inherited): two workers with two threads
    each oversubscribe the 2 cores, and torch's spinning threads then ran a 4 s test in 87 s."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")
        import torch
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module's in-process training and sampling: on the shared
    2-core box two threads contend and run ~10x slower. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def materialized(tmp_path_factory):
    """The whole `data` group materialized once per session (real Spark local[2], real MLflow on
    SQLite) on a 160-page generated crawl: tests/test_data_assets.py checks it against the crawl's
    manifest, tests/test_dataset_export.py exports it. Its tests only read it."""
    import json

    import dagster as dg

    from assets.data import data_assets
    from assets.lineage import MLflowTracker
    from assets.partitions import warc_batches
    from assets.resources import CrawlSource, DataConfigResource, LakeResource, SparkResource
    from pipelines.samplecrawl import generate_crawl
    CRAWL = "CC-MAIN-2099-01"
    root = tmp_path_factory.mktemp("assets")
    info = generate_crawl(root / "source", pages=160, seed=21, crawl=CRAWL, files=2)
    (root / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(root / "dagster_home"))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlartifacts"))
    resources = {"lake": LakeResource(root=str(root / "lake")),
                 "source": CrawlSource(crawl=CRAWL, base_url=str(root / "source"), files_per_batch=2),
                 "spark": SparkResource(master="local[2]"), "data_config": DataConfigResource(),
                 "mlflow_tracker": tracker}
    results = [dg.materialize(data_assets, selection=["crawl_manifest"], instance=instance, resources=resources)]
    batches = instance.get_dynamic_partitions(warc_batches.name)
    for key in batches:
        results.append(dg.materialize(data_assets, selection=["warc_files", "extracted_text", "filtered_text"],
                                      partition_key=key, instance=instance, resources=resources))
    results.append(dg.materialize(data_assets, selection=["deduped_text", "clean_text"], instance=instance,
                                  resources=resources))
    manifest = {json.loads(line)["record_id"]: json.loads(line) for line in open(info.manifest_path)}
    return {"root": root, "instance": instance, "results": results, "batches": batches,
            "manifest": manifest, "tracker": tracker}
