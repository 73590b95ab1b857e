"""`crawl2chat` console script: one subcommand per module, imported only when used."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module exposing `add_arguments(parser)` and `main(args) -> int | None`
SUBCOMMANDS = {
    "sample-crawl": ("pipelines.samplecrawl.cli", "generate a realistic sample crawl in real WARC files"),
    "list-crawl": ("pipelines.commoncrawl", "list a crawl's WARC files from its warc.paths.gz"),
    "download": ("pipelines.commoncrawl", "download WARC files of a crawl (resumable, verified)"),
    "process": ("pipelines.process", "run the data stages over WARC files on this machine"),
    "tokenize": ("pipelines.tokenizer_cli", "show how a text is tokenized"),
    "serve": ("training.engine.server", "web chat and OpenAI-compatible API for a model (loopback by default)"),
    "chat": ("training.engine.chat_cli", "chat with a model in the terminal (streaming, tools inline, --base)"),
    "report": ("training.evals.report", "report cards of the registered model lineages (Markdown + HTML)"),
    "export": ("training.interop.cli", "export a model for transformers (--format hf) or llama.cpp (--format gguf)"),
    "export-dataset": ("pipelines.dataset_export", "export a crawl's clean text as a FineWeb-style Parquet dataset"),
    "adopt": ("pipelines.adopt", "mark an output directory written before markers existed as crawl2chat's"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="crawl2chat", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:  # import only the module that is used: startup stays fast
            mod = importlib.import_module(module)
            getattr(mod, "add_arguments")(p, name) if _takes_name(mod) else mod.add_arguments(p)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mod = importlib.import_module(SUBCOMMANDS[args.command][0])
    from pipelines.errors import UserError
    try:
        return int(mod.main(args) or 0)
    except UserError as e:  # a mistake the user can fix: one line, no traceback
        print(f"crawl2chat: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("crawl2chat: interrupted", file=sys.stderr)
        return 130


def _takes_name(mod) -> bool:
    import inspect
    return len(inspect.signature(mod.add_arguments).parameters) == 2


if __name__ == "__main__":
    sys.exit(main())
