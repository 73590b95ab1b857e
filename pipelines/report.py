"""What people look at: the per-stage funnel as a Markdown table and a chart, and sample documents."""
from __future__ import annotations

from pathlib import Path


def funnel_markdown(stats: dict, top_reasons: int = 4) -> str:
    """stats: RunStats.as_dict(). One row per stage: in, out, removed, top drop reasons, seconds."""
    lines = ["| stage | docs in | docs out | removed | top drop reasons | seconds |",
             "|---|---:|---:|---:|---|---:|"]
    for stage, s in stats.items():
        reasons = ", ".join(f"{r} {n}" for r, n in list(s["dropped"].items())[:top_reasons]) or "-"
        lines.append(f"| {stage} | {s['docs_in']} | {s['docs_out']} | {s['docs_removed']} | {reasons} "
                     f"| {s['seconds']:.2f} |")
    return "\n".join(lines)


def funnel_chart(stats: dict, path: str | Path, title: str = "documents left after each stage") -> Path:
    """A horizontal bar chart of documents out per stage, written atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.io import atomic_write_bytes
    import io

    stages = list(stats)
    outs = [stats[s]["docs_out"] for s in stages]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(stages) + 1.2), dpi=100)
    ax.barh(stages[::-1], outs[::-1], color="#3b7dd8")
    for y, v in enumerate(outs[::-1]):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("documents")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def samples_markdown(kept: list[dict], removed: list[dict], chars: int = 300) -> str:
    """Three kept documents and three removed ones with their stage and reason."""
    def clip(t: str) -> str:
        t = " ".join((t or "").split())
        return t[:chars] + ("…" if len(t) > chars else "")
    out = ["### kept"]
    out += [f"- **{d.get('url')}**: {clip(d.get('text'))}" for d in kept[:3]]
    out.append("### removed")
    out += [f"- **{d.get('url')}** ({d.get('stage')}: `{d.get('reason')}`): {clip(d.get('text'))}"
            for d in removed[:3]]
    return "\n".join(out)
