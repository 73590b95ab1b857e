"""`crawl2chat tokenize "some text"`: how a text is cut into tokens (like tiktokenizer).

On a terminal the pieces are shown on alternating background colours, then the ids and the
count; piped, one `id<TAB>piece` line per token (pieces escaped) and the count. A token that is
part of a multi-byte character shows its raw bytes as \\xNN.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Background colours that keep black or white text readable, cycled per token.
_BACKGROUNDS = (44, 42, 45, 46, 43, 41, 104, 102, 105, 106)
_RESET = "\x1b[0m"


def add_arguments(parser) -> None:
    parser.add_argument("text", nargs="?", help="the text ('-' or nothing: read stdin)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory or tokenizer.json (default: the newest under "
                             "$CRAWL2CHAT_LAKE/tokenizer/, lake = ./lake)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def _resolve(path: str | None) -> Path:
    from pipelines.tokenizer import latest_tokenizer
    if path:
        return Path(path)
    lake = Path(os.environ.get("CRAWL2CHAT_LAKE", "lake"))
    found = latest_tokenizer(lake)
    if found is None:
        raise SystemExit(f"crawl2chat tokenize: no tokenizer under {lake / 'tokenizer'}; materialize the "
                         "`tokenizer` asset (or pass --tokenizer PATH)")
    return found


def _show(piece: bytes, special: bool) -> str:
    if special:
        return piece.decode("utf-8")
    text = piece.decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def render(tok, text: str, color: bool) -> str:
    ids = tok.encode(text)
    pieces = [_show(tok.piece(i), tok.is_special(i)) for i in ids]
    n_bytes = len(text.encode("utf-8"))
    summary = (f"{len(ids)} tokens, {len(text)} characters, {n_bytes} bytes"
               + (f", {n_bytes / len(ids):.2f} bytes/token" if ids else ""))
    if color:
        coloured = "".join(f"\x1b[30;{_BACKGROUNDS[k % len(_BACKGROUNDS)]}m{p}{_RESET}"
                           for k, p in enumerate(pieces))
        return f"{coloured}\n\n{ids}\n\n{summary}"
    lines = [f"{i}\t{p}" for i, p in zip(ids, pieces)]
    return "\n".join(lines + [summary])


def main(args) -> int:
    from pipelines.tokenizer import load_tokenizer
    text = sys.stdin.read() if args.text in (None, "-") else args.text
    tok = load_tokenizer(_resolve(args.tokenizer))
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(render(tok, text, color))
    return 0
