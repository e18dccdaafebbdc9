"""Sample employees and a simulated mobile app, for ``empsync demo`` (no network).

Everything is generated from a seeded ``random.Random``, so the same seed
gives the same collection. The app keeps making the edits a real HR app
makes — raises, promotions, new phones, leave, hires, departures — and now
and then writes a document that breaks a field rule, so rejects show too.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud.firestore import Client

log = logging.getLogger("empsync.demo")

FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Elif",
    "Farah",
    "Gustavo",
    "Hana",
    "Ivan",
    "Jamal",
    "Keiko",
    "Lars",
    "Maya",
    "Noor",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoé",
]
LAST = [
    "Almeida",
    "Baker",
    "Chen",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Müller",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quispe",
    "Rossi",
    "Silva",
    "Tanaka",
    "Újvári",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zhang",
]
DEPARTMENTS = {
    "Engineering": ["Engineer", "Senior Engineer", "Staff Engineer", "Engineering Manager"],
    "Sales": ["Account Executive", "Sales Manager", "Sales Engineer"],
    "Support": ["Support Agent", "Support Lead"],
    "Finance": ["Accountant", "Financial Analyst", "Controller"],
    "People": ["HR Partner", "Recruiter"],
    "Design": ["Product Designer", "Design Lead"],
}
CITIES = ["Lisbon", "Berlin", "Toronto", "Nairobi", "Osaka", "São Paulo", "Kraków", "Austin"]
SKILLS = ["python", "sql", "negotiation", "figma", "excel", "kotlin", "swift", "go", "support", "hiring"]
STATUSES = ["active"] * 12 + ["on_leave"]


def _employee(rng: random.Random, number: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    department = rng.choice(list(DEPARTMENTS))
    hired = date(2015, 1, 1) + timedelta(days=rng.randrange(0, 3650))
    return {
        "name": f"{first} {last}",
        "email": f"{first}.{last}.{number}@example.com".lower(),
        "phone": f"+1-555-{rng.randrange(0, 10_000):04d}",
        "department": department,
        "position": rng.choice(DEPARTMENTS[department]),
        "status": rng.choice(STATUSES),
        "salary": rng.randrange(40, 180) * 1000,
        "hired_at": hired.isoformat(),
        "address": {"city": rng.choice(CITIES), "street": f"{rng.randrange(1, 200)} Main St"},
        "skills": rng.sample(SKILLS, k=rng.randrange(1, 4)),
        # Not mapped: the field mask keeps it in Firestore.
        "password_hash": f"$2b$12${rng.getrandbits(120):030x}",
    }


def employee_id(number: int) -> str:
    return f"emp-{number:05d}"


def seed(client: Client, count: int, collection: str = "employees", rng_seed: int = 42) -> int:
    """Write ``count`` sample employees in batches; returns how many were written."""
    from google.cloud import firestore

    rng = random.Random(rng_seed)
    col = client.collection(collection)
    batch = client.batch()
    for number in range(1, count + 1):
        batch.set(
            col.document(employee_id(number)), {**_employee(rng, number), "updated_at": firestore.SERVER_TIMESTAMP}
        )
        if number % 400 == 0:
            batch.commit()
            batch = client.batch()
    batch.commit()
    return count


# Documents the app gets wrong now and then, each breaking one field rule.
INVALID_EDITS: list[tuple[str, Callable[[random.Random], dict[str, Any]]]] = [
    ("salary typed as words", lambda rng: {"salary": "about fifty thousand"}),
    ("name deleted", lambda rng: {"name": None}),
    ("hire date in a US format", lambda rng: {"hired_at": "03/14/2021"}),
    ("email pasted twice over", lambda rng: {"email": "x" * 300 + "@example.com"}),
    ("salary with cents", lambda rng: {"salary": 51234.5}),
]


class MobileApp:
    """A thread that edits the collection the way the company's app would."""

    def __init__(
        self, client: Client, start_count: int, collection: str = "employees", pace_s: float = 1.0, rng_seed: int = 7
    ) -> None:
        self.client = client
        self.col = client.collection(collection)
        self.rng = random.Random(rng_seed)
        self.next_number = start_count + 1
        self.live = list(range(1, start_count + 1))
        self.pace_s = pace_s
        self.writes = 0
        self.invalid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="empsync-demo-app", daemon=True)

    def start(self) -> MobileApp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.3, 1.7) * self.pace_s):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the emulator going away ends the demo; say so once
                log.warning("demo app: %s", type(exc).__name__)
                if self._stop.wait(5):
                    return

    def step(self) -> str:
        """One edit; returns what it did."""
        from google.cloud import firestore

        rng = self.rng
        roll = rng.random()
        stamp = {"updated_at": firestore.SERVER_TIMESTAMP}
        self.writes += 1
        if roll < 0.06:
            number = self.next_number
            self.next_number += 1
            self.live.append(number)
            self.col.document(employee_id(number)).set({**_employee(rng, number), **stamp})
            return f"hired {employee_id(number)}"
        if roll < 0.09 and len(self.live) > 10:
            number = self.live.pop(rng.randrange(len(self.live)))
            self.col.document(employee_id(number)).delete()
            return f"deleted {employee_id(number)}"
        number = rng.choice(self.live)
        doc = self.col.document(employee_id(number))
        if roll < 0.14:
            what, edit = rng.choice(INVALID_EDITS)
            self.invalid += 1
            doc.update({**edit(rng), **stamp})
            return f"invalid edit on {employee_id(number)}: {what}"
        if roll < 0.19:
            doc.update({"status": "terminated", **stamp})
            return f"{employee_id(number)} left"
        department = rng.choice(list(DEPARTMENTS))
        edits: list[dict[str, Any]] = [
            {"salary": rng.randrange(40, 200) * 1000},
            {"phone": f"+1-555-{rng.randrange(0, 10_000):04d}"},
            {"status": rng.choice(["active", "on_leave"])},
            {"department": department, "position": rng.choice(DEPARTMENTS[department])},
            {"address.city": rng.choice(CITIES)},
            # A repair: a valid version clears an earlier reject.
            {**_employee(rng, number)},
        ]
        change = rng.choice(edits)
        doc.update({**change, **stamp})
        return f"edited {employee_id(number)}: {', '.join(change)}"
