"""`make ui`: the Dagster UI (`dagster dev`: webserver + daemon) and the MLflow UI, started together
and stopped together.

Each service runs in a session of its own (pipelines/services.py, the mechanism `make services` uses
too). On Ctrl-C (SIGINT) or SIGTERM, or when either service exits, both get SIGTERM, and whatever is
still alive in their sessions after `--grace` seconds gets SIGKILL:
`dagster dev` alone can take over a minute to wind down its webserver, daemon and code server,
and a Ctrl-C that does not stop the UI promptly is a Ctrl-C the user repeats until something
breaks. SQLite storage (runs, events, MLflow) is crash-safe, so the hard stop loses nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pipelines.services import BIN, Service, StopFlag, spawn


def commands(host: str, dagster_port: int, mlflow_port: int) -> dict[str, list[str]]:
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///dagster_home/mlflow.db")
    artifacts = os.environ.get("CRAWL2CHAT_MLFLOW_ARTIFACTS", "dagster_home/mlartifacts")
    return {
        "mlflow": [str(BIN / "mlflow"), "ui", "--host", host, "--port", str(mlflow_port),
                   "--backend-store-uri", tracking, "--default-artifact-root", artifacts],
        "dagster": [str(BIN / "dagster"), "dev", "-h", host, "-p", str(dagster_port),
                    "-w", "dagster_home/workspace.yaml"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dagster-port", type=int, default=3000)
    ap.add_argument("--mlflow-port", type=int, default=5000)
    ap.add_argument("--serve-port", type=int, default=8000, help="where `make serve` puts the chat")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host}: neither UI authenticates users; put an authenticating "
              "proxy in front (README, Production shape)", file=sys.stderr)
    print(f"Dagster UI: http://{args.host}:{args.dagster_port}   "
          f"MLflow UI: http://{args.host}:{args.mlflow_port}/#/experiments   "
          f"chat (after `make serve`): http://{args.host}:{args.serve_port}   Ctrl-C stops both UIs",
          flush=True)
    stop = StopFlag()
    procs = {name: spawn(name, cmd, None) for name, cmd in commands(args.host, args.dagster_port, args.mlflow_port).items()}
    uis = Service("ui", f"http://{args.host}:{args.dagster_port}", list(procs.values()), logs=[])
    try:
        while not stop.set and all(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
    finally:
        exited = [n for n, p in procs.items() if p.returncode is not None]
        uis.stop(grace=args.grace)  # SIGTERM, then SIGKILL to what is left of their sessions
    if exited and not stop.set:
        print(f"crawl2chat: error: {exited[0]} exited with code {procs[exited[0]].returncode}; "
              "stopped the other UI too", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
