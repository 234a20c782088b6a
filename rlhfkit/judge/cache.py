"""A persistent cache of judge answers (SQLite), so reruns and resumed runs repeat no request."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


def cache_key(model: str, template: str, question: str, first: str, second: str, base_url: str | None = None,
              temperature: float = 0.0, max_tokens: int | None = None) -> str:
    """Everything that can change an answer: the endpoint, the judge model, the prompt as sent, and the
    sampling settings."""
    blob = json.dumps({"base_url": (base_url or "").rstrip("/"), "model": model, "template": template,
                       "question": question, "first": first, "second": second, "temperature": float(temperature),
                       "max_tokens": max_tokens}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """key → (answer, prompt tokens, completion tokens); every put is committed at once."""

    def __init__(self, path: str | None):
        self.path = path
        if path is None:
            self.db = sqlite3.connect(":memory:")
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT, "
                        "prompt_tokens INTEGER, completion_tokens INTEGER)")
        self.db.commit()

    def get(self, key: str) -> tuple[str, int, int] | None:
        row = self.db.execute("SELECT answer, prompt_tokens, completion_tokens FROM answers WHERE key = ?", (key,)).fetchone()
        return tuple(row) if row else None

    def put(self, key: str, answer: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, answer, prompt_tokens, completion_tokens))
        self.db.commit()

    def close(self) -> None:
        self.db.close()
