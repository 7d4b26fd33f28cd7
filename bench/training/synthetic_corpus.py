#!/usr/bin/env python3
"""A synthetic English-like corpus with learnable structure, for training runs and benchmarks on this machine (no
real corpus can be downloaded here). Deterministic for a seed. Documents are separated by blank lines, as
`dss prepare-data` reads .txt files.

Kinds of document: two-digit additions with their sums, counting runs, facts about a fixed world (each name has
one colour, animal and city, repeated across documents so they can be learnt), and short copy tasks.

    python3 bench/training/synthetic_corpus.py --documents 20000 --seed 1 > corpus.txt
"""
import argparse
import random

NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu", "Max", "Ned", "Oz", "Pia"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "fox", "owl", "horse", "goat", "fish", "bird"]
CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Tokyo"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--documents", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    world = random.Random(1234)  # the facts are the same whatever the seed
    facts = {n: (world.choice(COLOURS), world.choice(ANIMALS), world.choice(CITIES)) for n in NAMES}
    rng = random.Random(a.seed)
    out = []
    for _ in range(a.documents):
        kind = rng.randrange(4)
        if kind == 0:
            lines = []
            for _ in range(rng.randint(3, 8)):
                x, y = rng.randint(10, 49), rng.randint(10, 49)
                lines.append(f"{x} + {y} = {x + y}.")
            out.append(" ".join(lines))
        elif kind == 1:
            start, step = rng.randint(1, 50), rng.randint(1, 5)
            out.append("Count: " + ", ".join(str(start + i * step) for i in range(rng.randint(6, 14))) + ".")
        elif kind == 2:
            names = rng.sample(NAMES, rng.randint(2, 5))
            parts = []
            for n in names:
                c, an, ci = facts[n]
                parts.append(rng.choice([
                    f"{n} likes the colour {c}, keeps a {an} and lives in {ci}.",
                    f"{n} lives in {ci}. The {an} of {n} is {c}.",
                    f"In {ci} lives {n}, whose favourite colour is {c} and whose pet is a {an}.",
                ]))
            out.append(" ".join(parts))
        else:
            words = [rng.choice(COLOURS + ANIMALS + CITIES) for _ in range(rng.randint(3, 7))]
            out.append("Repeat: " + " ".join(words) + ". Again: " + " ".join(words) + ".")
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
