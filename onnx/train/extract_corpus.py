#!/usr/bin/python3
"""Extracts the four-domain training corpus from text that Debian packages ship.

Domains: English, German and French man pages (rendered to plain text) and Python
standard-library source. Documents are chosen in a seeded order, so the same packages and seed
give the same corpus. The first documents of each domain (whole documents, never seen in
training) form the held-out sample.

    /usr/bin/python3 onnx/train/extract_corpus.py --out /tmp/dancemoe-corpus

Writes OUT/{domain}.train.txt and OUT/{domain}.heldout.txt for domain in en, de, fr, python.
"""

import argparse
import os
import random
import subprocess
import sys
import time

DOMAINS = ("en", "de", "fr", "python")
MAN_SECTIONS = [f"man{i}" for i in range(1, 9)]


def man_pages(root):
    pages = []
    for section in MAN_SECTIONS:
        folder = os.path.join(root, section)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            # Thousands of near-identical generated gcloud pages would swamp the English domain.
            if name.startswith("gcloud"):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                pages.append(path)
    return pages


def python_sources(root):
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "encodings", "pydoc_data",
            "__pycache__", "lib2to3", "ensurepip"}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("config-"))
        for name in sorted(names):
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                files.append(os.path.join(folder, name))
    return sorted(files)


def render_man(path):
    env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    man = subprocess.run(["man", "--nh", "--nj", "-l", path], env=env, capture_output=True, timeout=60)
    if man.returncode != 0:
        return None
    col = subprocess.run(["col", "-bx"], input=man.stdout, env=env, capture_output=True, timeout=60)
    return col.stdout if col.returncode == 0 else None


def read_source(path):
    with open(path, "rb") as f:
        return f.read()


def extract(domain, docs, read, budget, heldout_budget, out):
    start = time.time()
    heldout, train = [], []
    heldout_size = train_size = 0
    used = 0
    for path in docs:
        if train_size >= budget:
            break
        text = read(path)
        if not text or len(text) < 200:
            continue
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            continue
        used += 1
        text = text.rstrip(b"\n") + b"\n\n"
        if heldout_size < heldout_budget:
            # Whole documents, cut at a line end so the sample stays a few tens of KB.
            room = heldout_budget - heldout_size
            if len(text) > room:
                cut = text.rfind(b"\n", 0, room)
                text = text[: cut + 1] if cut > 0 else text[:room]
                text.decode("utf-8")
            heldout.append(text)
            heldout_size += len(text)
        else:
            train.append(text)
            train_size += len(text)
    for kind, parts in (("train", train), ("heldout", heldout)):
        with open(os.path.join(out, f"{domain}.{kind}.txt"), "wb") as f:
            f.write(b"".join(parts))
    print(f"{domain}: {used} documents of {len(docs)}, train {train_size} bytes, heldout {heldout_size} bytes,"
          f" {time.time() - start:.0f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-bytes", type=int, default=5_000_000, help="per domain")
    parser.add_argument("--heldout-bytes", type=int, default=32_768, help="per domain")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sources = {
        "en": (man_pages("/usr/share/man"), render_man),
        "de": (man_pages("/usr/share/man/de"), render_man),
        "fr": (man_pages("/usr/share/man/fr"), render_man),
        "python": (python_sources("/usr/lib/python3.11"), read_source),
    }
    for domain in DOMAINS:
        docs, read = sources[domain]
        if not docs:
            sys.exit(f"{domain}: no documents found (install manpages-de manpages-fr?)")
        random.Random(f"{args.seed}:{domain}").shuffle(docs)
        extract(domain, docs, read, args.train_bytes, args.heldout_bytes, args.out)


if __name__ == "__main__":
    main()
