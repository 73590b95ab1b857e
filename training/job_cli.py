"""The command line every training job shares (python -m training.pretrain / training.sft / training.rl...):
the common arguments, their config overrides, and an entry point that turns a UserError into one line.
"""
from __future__ import annotations

import sys
from typing import Any, Callable


def job_arg_parser(doc: str | None, data_help: str):
    """The arguments every job's command line shares (the deepspeed launcher adds --local_rank)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML or JSON training config (training/configs/*.yaml)")
    ap.add_argument("--data", required=True, help=data_help)
    ap.add_argument("--out", required=True, help="run directory: checkpoints/, export/, metrics.jsonl")
    ap.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.zero_stage=2 (repeatable)")
    ap.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    ap.add_argument("--zero-stage", type=int, help="shorthand for --set train.zero_stage=N")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def job_overrides(args) -> list[str]:
    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.zero_stage is not None:
        overrides.append(f"train.zero_stage={args.zero_stage}")
    return overrides


def cli_main(main: Callable[[], Any]) -> None:
    """Entry point of a job module: a UserError (a bad config, damaged data) prints one line and exits
    with its code instead of a traceback per rank."""
    from pipelines.errors import UserError
    try:
        main()
    except UserError as e:
        print(f"crawl2chat: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
