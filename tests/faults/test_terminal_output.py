"""Hostile document ids and values through a real sync to every text output.

Documents whose ids, names and values hold terminal escapes, bidi overrides,
C1 controls and line separators (a fixed corpus plus fuzzed text, seeded)
are written to the emulator and synced by the real CLI. Every text output
that can show them: ``sync -v`` (its log lines), ``sync --dry-run``,
``changes``, ``rejects``, ``status`` and ``verify``, must hold no control
character but the newlines that end its own lines, and each row stays one
line; the ``--json`` forms give back the very ids that were written.
"""

from __future__ import annotations

import json
import random
import unicodedata

import pytest

from ..conftest import employee, run_cli, write_docs, write_toml
from .support import seeded

pytestmark = pytest.mark.integration

ATTACKS = [
    "\x1b]0;owned\x07",
    "\x1b[2J\x1b[H",
    "\x1b[31mred\x1b[0m",
    "\u202eevil\u202c",
    "forged\n2026-01-01T00:00:00Z INFO  Employee sync completed",
    "carriage\roverwrite",
    "\x9b2J",
    "nul\x00bel\x07del\x7f",
    "sep\u2028para\u2029",
    "bom\ufefftag\U000e0041",
]
DANGEROUS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))] + ["\u202e", "\u2066", "\u200b", "\u2028", "\ufeff"]
UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def fuzzed(rng: random.Random, size: int) -> str:
    pool = DANGEROUS + list("abcXYZ 0123[];") + ["é", "李", "👩\u200d💻"]
    return "".join(rng.choice(pool) for _ in range(size))


def doc_id(text: str, n: int) -> str:
    """A Firestore-legal id around ``text``: no slash, not . or .., not __x__."""
    return f"id{n}-" + text.replace("/", "|")


def unsafe(text: str) -> list[str]:
    return [repr(c) for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES and c not in "\n\u200c\u200d"]


def test_no_control_character_from_a_document_reaches_a_terminal(make_config, sqlite_url, firestore_client, tmp_path):
    rng = seeded("terminal-output")
    texts = ATTACKS + [fuzzed(rng, rng.randint(1, 30)) for _ in range(30)]
    docs, ids = {}, []
    for n, text in enumerate(texts):
        ident = doc_id(text, n)
        ids.append(ident)
        data = employee(n, name=f"Name {text}", department=text[:100], skills=[text, {"k": text}])
        if n % 3 == 0:
            data["salary"] = f"about {text}"  # a reject whose reason quotes the value
        docs[ident] = data
    write_docs(firestore_client, docs)
    path = str(write_toml(tmp_path / "sync.toml", make_config(sqlite_url)))

    outputs = {}
    done = run_cli("--config", path, "sync", "--force", "-v")
    assert done.returncode == 0, done.stderr[-3000:]
    outputs["sync -v"] = done.stdout + done.stderr
    # Changes for the next dry run and the change log.
    write_docs(firestore_client, {i: {**docs[i], "name": "Renamed " + docs[i]["name"]} for i in ids[1::3]})
    for args in (("sync", "--dry-run"), ("changes", "--limit", "1000"), ("rejects",), ("status",), ("verify", "--yes")):
        done = run_cli("--config", path, *args)
        assert done.returncode in (0, 1), (args, done.stderr[-3000:])
        outputs[" ".join(args)] = done.stdout + done.stderr

    for what, text in outputs.items():
        assert unsafe(text) == [], f"{what}: {unsafe(text)[:10]}\n{text[:2000]}"
    # One line per row: no value started a line of its own.
    rejects = outputs["rejects"].strip().splitlines()
    assert len(rejects) == len([n for n in range(len(texts)) if n % 3 == 0]), outputs["rejects"]
    # The JSON forms stay exact.
    changes = json.loads(run_cli("--config", path, "changes", "--limit", "1000", "--json").stdout)
    assert {c["document_id"] for c in changes} == {i for n, i in enumerate(ids) if n % 3}  # the rest are rejects
    rejected = json.loads(run_cli("--config", path, "rejects", "--json").stdout)
    assert {r["document_id"] for r in rejected} == {i for n, i in enumerate(ids) if n % 3 == 0}
