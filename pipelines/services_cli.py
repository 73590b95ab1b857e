"""`make services`: the production shape on this machine, on loopback, until Ctrl-C.

    python -m pipelines.services_cli [--workers 2] [--data-dir DIR] [--no-connect]

Starts Postgres (databases `dagster` and `mlflow`), an MLflow tracking server on it (basic auth:
a generated admin account), a Spark standalone master with workers (spark.authenticate on, no REST
submission server) and a Spark Connect server (a generated token), prints their URLs and writes
the variables a client needs into an env file (mode 0600: it holds the generated passwords, so
they never reach the terminal or a command line). In another shell:

    set -a; . <state>/services.env; set +a
    dagster job execute -m assets.definitions -j discover_crawl     # on Postgres, Spark, MLflow

Ctrl-C (or SIGTERM) stops every service; a service that dies stops the others too. Without
--data-dir everything is thrown away at exit; with it, Postgres data, MLflow artifacts and the
passwords are kept there for the next launch.
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pipelines import services, spark_services
from pipelines.errors import UserError

INSTANCE_FILES = Path(__file__).resolve().parents[1] / "dagster_home"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=2, help="Spark workers (1 core each)")
    p.add_argument("--worker-memory", default="1g")
    p.add_argument("--no-connect", action="store_true", help="no Spark Connect server")
    p.add_argument("--data-dir", type=Path, help="keep state here across launches (default: a temp dir)")
    p.add_argument("--grace", type=float, default=20.0, help="seconds between the stop signal and SIGKILL")


def _secret(state: Path, name: str) -> str:
    """A generated secret, kept in the state dir (0600) so a kept Postgres (or MLflow's auth
    database) still accepts it."""
    path = state / f".{name}"
    if not path.exists():
        services.write_private(path, secrets.token_urlsafe(18))
    return path.read_text().strip()


def _dagster_home(state: Path) -> Path:
    home = state / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(INSTANCE_FILES / "dagster.postgres.yaml", home / "dagster.yaml")
    shutil.copy(INSTANCE_FILES / "workspace.yaml", home / "workspace.yaml")
    return home


def main(args: argparse.Namespace) -> int:
    stop = services.StopFlag()
    keep = args.data_dir is not None
    state = (args.data_dir or Path(tempfile.mkdtemp(prefix="crawl2chat-services-"))).absolute()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(state.stat().st_mode | 0o011)  # Postgres runs as another user: it must traverse this
    running: list[services.Service] = []
    try:
        pg = services.start_postgres(password=_secret(state, "postgres-password"), data_dir=state / "postgres")
        running.append(pg)
        admin = ("admin", _secret(state, "mlflow-admin-password"))
        running.append(services.start_mlflow_server(pg, state / "mlartifacts", log_dir=state, auth=admin))
        running.append(spark_services.start_spark_cluster(args.workers, 1, args.worker_memory,
                                                          base_dir=state / "spark",
                                                          auth_secret=_secret(state, "spark-secret")))
        if not args.no_connect:
            running.append(spark_services.start_spark_connect(base_dir=state / "spark-connect",
                                                              token=_secret(state, "spark-connect-token")))
        # MLflow's client reads these two; the Dagster processes and the trainers log as the admin
        env = {"DAGSTER_HOME": str(_dagster_home(state)),
               "MLFLOW_TRACKING_USERNAME": admin[0], "MLFLOW_TRACKING_PASSWORD": admin[1]}
        for svc in running:
            env.update(svc.env)
        env.pop("PGPASSWORD", None)
        env_file = state / "services.env"
        services.write_private(env_file, "".join(f"{k}={v}\n" for k, v in sorted(env.items())))
        print("crawl2chat services, all on 127.0.0.1 (Ctrl-C stops them all):")
        for svc in running:
            extra = f"   web UI {svc.info['web_ui']}" if "web_ui" in svc.info else ""
            print(f"  {svc.name:<14} {svc.url}{extra}")
        print(f"In another shell:  set -a; . {env_file}; set +a\n"
              f"Logs and state: {state}{'' if keep else ' (deleted at exit)'}", flush=True)
        while not stop.set and all(p.poll() is None for svc in running for p in svc.procs):
            time.sleep(0.5)
        dead = [svc for svc in running if any(p.poll() is not None for p in svc.procs)]
        if dead and not stop.set:
            print(f"crawl2chat: error: {dead[0].name} exited; stopping the others. Its log:\n"
                  f"{dead[0].log_tail()}", file=sys.stderr)
            return 1
        return 0
    except UserError as e:
        print(f"crawl2chat: error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        for svc in reversed(running):
            svc.stop(grace=args.grace)
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
