"""The one record every stage passes along, shaped like datatrove's and FineWeb's rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# FineWeb-compatible column order (fineweb-recipe.md, "Output schema"); later stages add theirs
# (minhash_cluster_id, minhash_cluster_size, token_count) after these.
FINEWEB_COLUMNS = ["text", "id", "dump", "url", "date", "file_path", "language", "language_score"]


@dataclass
class Document:
    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # What stages derive from the text and share (the word tokens three quality filters use), each
    # entry keyed by the text it was computed from; never written out (to_row), never compared.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_row(self) -> dict[str, Any]:
        """Flat row for Parquet: FineWeb columns first, then whatever a stage added."""
        row = {"text": self.text, "id": self.id}
        for key in FINEWEB_COLUMNS[2:]:
            row[key] = self.metadata.get(key)
        for key, value in self.metadata.items():
            if key not in row:
                row[key] = value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Document":
        meta = {k: v for k, v in row.items() if k not in ("text", "id")}
        return cls(text=row["text"], id=row["id"], metadata=meta)
