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


def test_no_credentials_in_committed_files_and_image_is_not_root():
    import re
    import subprocess
    compose_text = (ROOT / "docker" / "compose.yaml").read_text()
    # every credential is an environment reference that refuses to start when unset
    assert not re.search(r"(?im)^\s*\w*password:[ \t]*(?!\$\{)\S", compose_text)
    assert not re.search(r"postgresql://\w+:\w+@", compose_text)
    assert compose_text.count("${POSTGRES_PASSWORD:?") >= 2 and "${SPARK_AUTH_SECRET:?" in compose_text
    example = (ROOT / "docker" / "env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example and "SPARK_AUTH_SECRET=" in example
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
    users = [line.split()[1] for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()
             if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    compose = yaml.safe_load(compose_text)
    assert "spark.authenticate=true" in compose["services"]["spark-master"]["environment"]["SPARK_MASTER_OPTS"]
