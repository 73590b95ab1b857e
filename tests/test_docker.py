"""No Docker engine runs here: the production files are checked statically instead."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_services_images_and_files_are_consistent():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "user-code", "webserver", "daemon", "mlflow", "spark-master"} <= set(services)
    build = services["user-code"]["build"]
    assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve().exists()
    built_image = services["user-code"]["image"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, (name, dep)
        if name not in ("postgres", "user-code"):
            assert svc["image"] == built_image, name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (ROOT / "docker" / src).exists(), src
    for port_map in (p for svc in services.values() for p in svc.get("ports", [])):
        assert port_map.startswith("127.0.0.1:")  # UIs bound to loopback by default


def test_dockerfile_copies_what_exists_and_instance_yaml_parses():
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    prod = yaml.safe_load((ROOT / "dagster_home" / "dagster.production.example.yaml").read_text())
    assert "postgres" in prod["storage"]
    ws = yaml.safe_load((ROOT / "docker" / "workspace.yaml").read_text())
    assert ws["load_from"][0]["grpc_server"]["location_name"] == "crawl2chat"
