"""The code location loads, and its assets, jobs and automation follow the project's conventions."""
from pathlib import Path

import dagster as dg
import yaml

from assets.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_and_pin_the_location_name():
    dg.Definitions.validate_loadable(defs)
    ws = yaml.safe_load((ROOT / "dagster_home" / "workspace.yaml").read_text())
    assert ws["load_from"][0]["python_module"]["location_name"] == "crawl2chat"
    inst = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert inst["telemetry"]["enabled"] is False and inst["nux"]["enabled"] is False
    assert "sqlite" in inst["storage"]


def test_every_asset_sets_group_code_version_and_kinds():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", key
        assert node.code_version, key
        assert node.kinds, key
    data = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "data"}
    assert data == {"crawl_manifest", "warc_files", "extracted_text", "filtered_text", "deduped_text", "clean_text"}


def test_jobs_and_stopped_automation():
    for name in ("data_pipeline", "end_to_end", "discover_crawl", "tokenize"):
        assert defs.resolve_job_def(name)
    assert defs.resolve_schedule_def("nightly_crawl").default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_sensor_def("new_warc_files").default_status == dg.DefaultSensorStatus.STOPPED


def test_blocking_checks_guard_the_data_assets():
    specs = {(s.asset_key.to_user_string(), s.name): s for a in defs.assets for s in a.check_specs}
    for key in [("filtered_text", "language_share"), ("deduped_text", "dedup_rate_in_range"),
                ("clean_text", "no_pii_residue"), ("extracted_text", "docs_accounted")]:
        assert key in specs and specs[key].blocking, key


def test_training_jobs_carry_the_tag_the_run_queue_limits_and_data_jobs_do_not():
    # dagster.postgres.yaml admits one run tagged crawl2chat/gpu at a time: every job that trains a
    # model or samples one (evaluation, the knowledge probes of post_training_data) must carry it, and
    # the data jobs must not (they would queue behind a week of pretraining).
    queue = yaml.safe_load((Path(__file__).parents[1] / "dagster_home" / "dagster.postgres.yaml").read_text())
    (limit,) = queue["run_coordinator"]["config"]["tag_concurrency_limits"]
    tagged = {name for name in ("pretrain", "end_to_end", "post_train", "rl", "evaluate", "post_training_data",
                                "data_pipeline", "tokenize", "search")
              if defs.get_job_def(name).tags.get(limit["key"])}
    assert tagged == {"pretrain", "end_to_end", "post_train", "rl", "evaluate", "post_training_data"}


def test_cpu_training_ranks_share_the_machine_s_cores(monkeypatch):
    # One rank on a CPU machine uses every core it may run on, two split them, and a user's
    # OMP_NUM_THREADS is passed on as given (a fixed 1 thread left half of a 2-core demo idle).
    import os

    from assets.training import TrainingLauncher
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert TrainingLauncher(processes=1).env() == {"LOCAL_SIZE": "1", "OMP_NUM_THREADS": str(cores)}
    assert TrainingLauncher(processes=2).env()["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert TrainingLauncher(processes=4 * cores).env()["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert TrainingLauncher(processes=1).env()["OMP_NUM_THREADS"] == "3"
