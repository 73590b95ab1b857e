"""No Docker engine runs here: the production files are checked statically instead."""
import re
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
    master_opts = compose["services"]["spark-master"]["environment"]["SPARK_MASTER_OPTS"]
    assert "spark.authenticate=true" in master_opts and "spark.master.rest.enabled=false" in master_opts
    # MLflow authenticates (basic auth), and every container that logs to it has the account
    assert "--app-name basic-auth" in compose["services"]["mlflow"]["command"][-1]
    assert "${MLFLOW_ADMIN_PASSWORD:?" in compose_text and "MLFLOW_ADMIN_PASSWORD=" in example
    for name in ("user-code", "webserver", "daemon"):
        assert "MLFLOW_TRACKING_PASSWORD" in compose["services"][name]["environment"], name


# ------------------------------------------------------------------------------------------
# docker/ and the services the tests start for real (pipelines/services.py,
# tests/test_production_shape.py) use the same commands, instance config and variables

def _env_refs(node) -> set[str]:
    """Names of the environment variables a Dagster instance config reads ({env: NAME})."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_refs(v) for v in node)) if node else set()
    return set()


def test_production_instance_is_the_tested_postgres_instance_and_compose_sets_its_variables():
    tested = yaml.safe_load((ROOT / "dagster_home" / "dagster.postgres.yaml").read_text())
    prod = yaml.safe_load((ROOT / "dagster_home" / "dagster.production.example.yaml").read_text())
    assert prod["storage"] == tested["storage"] and prod["run_coordinator"] == tested["run_coordinator"]
    needed = _env_refs(tested)
    assert needed == {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                      "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"}
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    for name in ("user-code", "webserver", "daemon"):  # every container that opens the instance
        assert needed <= set(services[name]["environment"]), name


def test_compose_runs_the_same_mlflow_and_spark_commands_as_the_tested_services():
    import shlex

    from pipelines import services as svc
    from pipelines import spark_services
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]

    def flags(argv):
        return {a for a in argv if a.startswith("--")}

    script = compose["mlflow"]["command"][-1].replace("$$", "$")
    mlflow_argv = shlex.split(script[script.index("&& exec ") + 3:])  # after the auth ini is written
    tested = svc.mlflow_server_command(5000, "postgresql+psycopg2://u@h:5432/mlflow", "/lake/mlartifacts", auth=True)
    assert mlflow_argv[1:3] == ["mlflow", "server"] and tested[1] == "server"
    # compose adds --allowed-hosts for its container hostname; the tests run one worker
    assert flags(mlflow_argv) - {"--allowed-hosts"} == flags(tested) - {"--workers"}
    backend = mlflow_argv[mlflow_argv.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg2://$POSTGRES_USER@")  # no password in the URI
    assert "PGPASSWORD" in compose["mlflow"]["environment"]

    assert spark_services.SPARK_MASTER_CLASS in compose["spark-master"]["command"][-1]
    assert spark_services.SPARK_WORKER_CLASS in compose["spark-worker-1"]["command"][-1]
    tested_env = spark_services._spark_env(Path("/tmp"), "secret")
    spark_env = compose["spark-master"]["environment"]
    for key in ("SPARK_MASTER_OPTS", "SPARK_WORKER_OPTS"):
        assert spark_env[key] == tested_env[key]  # spark.authenticate, no REST server, no secret in a -D option
    assert spark_env["_SPARK_AUTH_SECRET"].startswith("${SPARK_AUTH_SECRET:?") and "_SPARK_AUTH_SECRET" in tested_env


def test_the_image_can_confine_model_code():
    """The python tool runs model code under bubblewrap or not at all: the image installs it (and
    libseccomp for the filter), and the service where runs execute lets bwrap make its namespaces."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"apt-get install[^\n]*\bbubblewrap\b", dockerfile) and "libseccomp2" in dockerfile
    user_code = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["user-code"]
    assert "seccomp=unconfined" in user_code["security_opt"] and "apparmor=unconfined" in user_code["security_opt"]
