"""The demo city's plate and contact registries, generated from a seed: run it once to write
``pipeline/demo/data/plates.csv`` and ``contacts.csv`` (``python -m pipeline.demo.registries``).

The plates are Zhejiang (浙A) small cars, with every fifth a new-energy car (浙AD…/浙AF…, type 52),
and every twentieth an out-of-province car (皖A) with no phone on record. Phones are made up but
shaped like mainland mobiles (11 digits, 13x/15x/18x/19x), so that they pass the same checks a real
registry's do and are masked like them. The same seed gives the same city; more rows only add to
the end (the first N of ``generate(M)`` are ``generate(N)``), so a benchmark that needs more plates
than the files hold generates the rest.
"""

import csv
import random
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
SIZE = 2000
"""Plates in the demo files: enough for the demo and the chaos run's cars (those with a phone)."""
SEED = 7


def generate(count: int, seed: int = SEED) -> list[tuple[str, str, str, str | None]]:
    """(plate, plate type, owner id, phone or None): about 5% have no phone on record."""
    rng = random.Random(seed)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    alnum = "0123456789" + letters
    rows, seen = [], set()
    while len(rows) < count:
        i = len(rows)
        plate_type = "02"
        if i % 20 == 19:
            plate = "皖A" + "".join(rng.choice("0123456789") for _ in range(5))
            phone = None
        elif i % 5 == 4:
            plate = "浙A" + rng.choice("DF") + rng.choice(alnum) + "".join(rng.choice("0123456789") for _ in range(4))
            plate_type = "52"
            phone = f"13{rng.randint(5, 9)}{rng.randint(0, 99_999_999):08d}"
        else:
            plate = "浙A" + "".join(rng.choice(alnum) for _ in range(5))
            phone = f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}"
        if plate in seen:
            continue
        seen.add(plate)
        rows.append((plate, plate_type, f"owner-{i:06d}", phone))
    return rows


def write(rows, directory: Path) -> tuple[Path, Path]:
    """``plates.csv`` and ``contacts.csv`` in ``directory``, in the import format (`parkwarden data import`)."""
    plates, contacts = directory / "plates.csv", directory / "contacts.csv"
    with plates.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(("plate", "plate_type", "owner_id"))
        out.writerows((plate, plate_type, owner) for plate, plate_type, owner, _ in rows)
    with contacts.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(("owner_id", "phone"))
        out.writerows((owner, phone) for _, _, owner, phone in rows if phone)
    return plates, contacts


if __name__ == "__main__":
    written = write(generate(int(sys.argv[1]) if len(sys.argv) > 1 else SIZE), DATA)
    print("wrote " + ", ".join(str(p) for p in written))
