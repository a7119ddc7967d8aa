"""The shipped demo task: pull a person's name, age, city and job out of a sentence as strict JSON.

Why this task: the 135M demo model answers it with prose or loosely formatted
JSON (exact match near 0%), yet the skill is a transformation it can learn in
about 60 LoRA steps on CPU, and it generalises: the held-out split uses first
names that never occur in training, so copying the right spans into the right
keys must be learned, not memorised. The sentences come in several phrasings
and the ages are written as digits, so the JSON's number must be copied
exactly. ``python -m qlora_nb.data.demo.generate`` regenerates the committed files
(deterministic for a seed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import DEMO_DIR

INSTRUCTION = "Extract the person's name, age, city and job as JSON."

FIRST_TRAIN = ("Maria James Aisha Chen Lucas Sofia Omar Emma Noah Priya Diego Hannah Yuki Mateo Olivia Ivan Fatima "
               "Leo Grace Samuel Elena Kwame Mia Arjun Clara Hugo Nadia Tom Ingrid Ravi Lena Pablo Zoe Felix Amara "
               "Oscar Julia Tariq Nora Victor Alice Kenji Rosa Daniel Leila").split()
FIRST_VAL = "Beatriz Anders Chiara Dmitri Esther Farid Gloria Henrik Isabel Jonas Keiko Lorenzo Marta Nikolai Olga".split()
LAST = ("Lopez Smith Khan Wang Martin Rossi Haddad Brown Nguyen Patel Garcia Weber Tanaka Silva Johnson Petrov "
        "Ali Moreau Kim Okafor Novak Jensen Costa Schmidt Dubois Fischer Murphy Larsen Sato Romero Hughes "
        "Ivanova Mensah Berg Castillo Reyes Walsh Yilmaz Andersen Bianchi").split()
CITIES = ("Madrid Lisbon Oslo Nairobi Toronto Lyon Osaka Denver Krakow Dublin Seville Porto Hamburg Austin "
          "Glasgow Perth Quito Tunis Bergen Graz Leeds Cork Turin Malmo Bruges Halifax Kyoto Accra Lima Riga").split()
JOBS = ("nurse teacher engineer baker pilot architect plumber chef lawyer dentist farmer journalist electrician "
        "librarian accountant painter pharmacist firefighter mechanic photographer").split()

PHRASINGS = (
    "{name}, {age}, lives in {city} and works as {a} {job}.",
    "Meet {name}: {a2} {age}-year-old {job} from {city}.",
    "{name} is {a} {job} in {city}. {first} is {age} years old.",
    "At {age}, {name} works as {a} {job} in {city}.",
    "Our new {job}, {name} ({age}), just moved to {city}.",
    "{city} is home to {name}, who is {age} and works as {a} {job}.",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_row(rng: random.Random, first_names: list[str]) -> dict[str, str]:
    first = rng.choice(first_names)
    name = f"{first} {rng.choice(LAST)}"
    age = str(rng.randint(19, 84))
    city, job = rng.choice(CITIES), rng.choice(JOBS)
    sentence = rng.choice(PHRASINGS).format(name=name, first=first, age=age, city=city, job=job, a=_article(job),
                                            a2="an" if age.startswith("8") or age in ("11", "18") else "a")
    output = json.dumps({"name": name, "age": int(age), "city": city, "job": job})
    return {"instruction": INSTRUCTION, "input": sentence, "output": output}


def generate(n_train: int = 320, n_val: int = 40, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train rows from one set of first names, held-out rows from a disjoint set."""
    rng = random.Random(seed)
    train = [make_row(rng, FIRST_TRAIN) for _ in range(n_train)]
    val = [make_row(rng, FIRST_VAL) for _ in range(n_val)]
    return train, val


def write(directory: Path = DEMO_DIR, **kw) -> None:
    from ...fileio import write_text_atomic

    train, val = generate(**kw)
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        write_text_atomic(directory / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    write()
    print(f"wrote {DEMO_DIR / 'train.jsonl'} and {DEMO_DIR / 'val.jsonl'}")
