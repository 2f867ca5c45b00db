"""Quality of routing and near-duplicate detection on the labelled evaluation set.

Usage (from the repository root)::

    python bench/dedup_quality.py                  # every split, one table each
    python bench/dedup_quality.py --split holdout  # one split
    python bench/dedup_quality.py --errors         # also list every wrong decision
    python bench/dedup_quality.py --check          # exit 1 when a target is missed

The set is ``tests/data/complaints_eval.jsonl``: one complaint a line with ``id``, ``channel``,
``text`` and the expected ``cluster`` (same matter = same cluster), ``classification``,
``agency`` and ``region_code``. ``split`` is ``dev`` (the rows the rules and thresholds were
tuned on) or ``holdout`` (written after the rules and never used to tune them).

Labelling policy: ``region_code`` is the most specific Kemendagri code the text's named places
determine (a kelurahan gives its kecamatan; a well-known landmark gives the area it is known
to be in, usually the kota; nothing named gives null). ``agency`` is the agency id of
``config/rules/agencies.toml`` that should act on the complaint.

Duplicates are measured as an intake would see them: complaints arrive in id order, each is
checked against those before it (LSH and block candidates, then ``is_same_matter``), and every
match is a predicted duplicate pair. "intake" (the targets) scores the clusters the gateway's
intake forms, through the same decision (:func:`normalizer.dedup.decide`, with region and
agency agreement): every pair of complaints in one predicted cluster against the pairs within
a labelled cluster. "matches" scores every same-matter match; "closure" their transitive
closure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Hashable, Iterable
from itertools import combinations
from pathlib import Path
from typing import Any

from normalizer.dedup import StoredFingerprint, decide
from normalizer.routing import Router, Routing
from normalizer.similarity import DuplicateFinder, LSHIndex, same_matter_reason

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "complaints_eval.jsonl"
TARGETS = {"duplicate precision": 0.95, "duplicate recall": 0.85,
           "classification accuracy": 0.90}


def load(path: Path) -> list[dict[str, Any]]:
    """The labelled rows of the evaluation set."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _pairs(groups: Iterable[Iterable[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for group in groups:
        out.update((a, b) if a < b else (b, a) for a, b in combinations(sorted(group), 2))
    return out


def _closure(ids: list[str], pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(find(i), []).append(i)
    return _pairs(groups.values())


Pairs = set[tuple[str, str]]


def _prf(predicted: Pairs, truth: Pairs) -> tuple[float, float, int, int]:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall, len(predicted) - hits, len(truth) - hits


def _intake_clusters(rows: list[dict[str, Any]], routed: list[Routing],
                     finder: DuplicateFinder) -> Pairs:
    """The pairs in one predicted cluster as the intake forms them: each complaint, in order,
    is given to :func:`normalizer.dedup.decide` with its LSH and block candidates and its
    routed region and agency, and joins the cluster the verdict names (or starts one)."""
    index = LSHIndex()
    cluster_of: dict[str, str] = {}
    for row, routing in zip(rows, routed, strict=True):
        fp = finder.fingerprint(row["text"])
        region = routing.region.value if routing.region else None
        agency = routing.agency.value if routing.agency else None
        candidates = [c.meta for c in index.query(fp.signature, extra_keys=fp.block_keys())]
        verdict = decide(fp, candidates, region=region, agency=agency)
        cluster = verdict.cluster_id or row["id"]
        cluster_of[row["id"]] = cluster
        index.add(row["id"], fp.signature,
                  StoredFingerprint.of(row["id"], cluster, fp, region, agency),
                  extra_keys=fp.block_keys())
    groups: dict[str, list[str]] = {}
    for member, cluster in cluster_of.items():
        groups.setdefault(cluster, []).append(member)
    return _pairs(groups.values())


def evaluate(rows: list[dict[str, Any]], router: Router, errors: bool) -> dict[str, float]:
    """Print the table for ``rows`` and return the headline numbers."""
    started = time.perf_counter()
    routed: list[Routing] = [router.route(row["text"]) for row in rows]
    route_ms = (time.perf_counter() - started) * 1000 / max(1, len(rows))

    finder = DuplicateFinder(router)
    predicted: set[tuple[str, str]] = set()
    started = time.perf_counter()
    for row in rows:
        found: list[Hashable] = finder.check(row["id"], row["text"])
        for other in found:
            a, b = sorted((row["id"], str(other)))
            predicted.add((a, b))
    dedup_ms = (time.perf_counter() - started) * 1000 / max(1, len(rows))
    intake_pairs = _intake_clusters(rows, routed, finder)
    ids = [row["id"] for row in rows]
    clusters: dict[str, list[str]] = {}
    for row in rows:
        clusters.setdefault(row["cluster"], []).append(row["id"])
    truth = _pairs(clusters.values())
    p_prec, p_rec, p_fp, p_fn = _prf(predicted, truth)
    c_prec, c_rec, c_fp, c_fn = _prf(_closure(ids, predicted), truth)
    i_prec, i_rec, i_fp, i_fn = _prf(intake_pairs, truth)

    checks = {
        "classification": lambda r: r.classification.value,
        "agency": lambda r: r.agency.value if r.agency else None,
        "region_code": lambda r: r.region.value if r.region else None,
    }
    accuracy: dict[str, float] = {}
    wrong: dict[str, list[str]] = {name: [] for name in checks}
    for row, result in zip(rows, routed, strict=True):
        for name, get in checks.items():
            got = get(result)
            if got == row[name]:
                accuracy[name] = accuracy.get(name, 0) + 1
            else:
                wrong[name].append(f"{row['id']} want={row[name]} got={got}: {row['text'][:90]}")
    for name in checks:
        accuracy[name] = accuracy.get(name, 0) / max(1, len(rows))

    multi = sum(1 for members in clusters.values() if len(members) > 1)
    print(f"  rows {len(rows)}, clusters {len(clusters)} ({multi} with 2+ reports), "
          f"duplicate pairs {len(truth)}")
    print(f"  {'metric':<32}{'value':>8}   {'target':>7}")
    table = [
        ("duplicate precision (intake)", i_prec, TARGETS["duplicate precision"]),
        ("duplicate recall (intake)", i_rec, TARGETS["duplicate recall"]),
        ("duplicate precision (matches)", p_prec, None),
        ("duplicate recall (matches)", p_rec, None),
        ("duplicate precision (closure)", c_prec, None),
        ("duplicate recall (closure)", c_rec, None),
        ("classification accuracy", accuracy["classification"],
         TARGETS["classification accuracy"]),
        ("agency accuracy", accuracy["agency"], None),
        ("region accuracy", accuracy["region_code"], None),
    ]
    for label, value, target in table:
        mark = "" if target is None else ("  ok" if value >= target else "  MISSED")
        shown = "" if target is None else f"{target:.2f}"
        print(f"  {label:<32}{value:>8.3f}   {shown:>7}{mark}")
    print(f"  intake clusters: {i_fp} false pairs, {i_fn} missed; matches: {len(predicted)} "
          f"predicted, {p_fp} false, {p_fn} missed; closure: {c_fp} false, {c_fn} missed")
    print(f"  time per complaint: routing {route_ms:.2f} ms, fingerprint+index {dedup_ms:.2f} ms")

    hits: Counter[str] = Counter()
    for result in routed:
        hits.update(result.rule_ids())
    print("  rule hits (decisions each rule made):")
    for prefix, title in (("classification", "classification"), ("category", "category"),
                          ("agency", "agency"), ("region", "region")):
        if prefix == "classification":
            counts = Counter(r.classification.rule_id for r in routed)
        elif prefix == "category":
            counts = Counter(r.category.rule_id if r.category else "(none)" for r in routed)
        elif prefix == "agency":
            counts = Counter(r.agency.rule_id if r.agency else "(none)" for r in routed)
        else:
            counts = Counter(r.region.rule_id.split(":", 2)[1] if r.region else "(none)"
                             for r in routed)
        shown_hits = ", ".join(f"{rule} {n}" for rule, n in counts.most_common(12))
        more = f", ... {len(counts) - 12} more" if len(counts) > 12 else ""
        print(f"    {title:<15}{shown_hits}{more}")

    if errors:
        by_id = {row["id"]: row for row in rows}

        def why(a: str, b: str) -> str:
            fa, fb = finder.index.get(a), finder.index.get(b)
            return same_matter_reason(fa[1], fb[1])[1] if fa and fb else ""

        for a, b in sorted(predicted - truth):
            print(f"  FALSE DUPLICATE {a} ({by_id[a]['cluster']}) ~ {b} ({by_id[b]['cluster']}): "
                  f"{why(a, b)}")
            print(f"      {by_id[a]['text'][:110]}\n      {by_id[b]['text'][:110]}")
        for a, b in sorted(truth - predicted):
            print(f"  MISSED DUPLICATE {a} ~ {b} ({by_id[a]['cluster']}): {why(a, b)}")
            print(f"      {by_id[a]['text'][:110]}\n      {by_id[b]['text'][:110]}")
        for name, lines in wrong.items():
            for line in lines:
                print(f"  WRONG {name}: {line}")
    return {"duplicate precision": i_prec, "duplicate recall": i_rec,
            "classification accuracy": accuracy["classification"]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; with ``--check`` return 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=["all", "dev", "holdout", "each"], default="each",
                        help="rows to score: one split, all rows together, or each split and "
                             "all (default)")
    parser.add_argument("--errors", action="store_true", help="list every wrong decision")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    print("$ " + " ".join(["python", "bench/dedup_quality.py", *sys.argv[1:]]))
    started = time.perf_counter()
    router = Router.from_files()
    print(f"router loaded in {(time.perf_counter() - started) * 1000:.0f} ms from the packaged "
          f"rules; data {args.data.name}")
    rows = load(args.data)
    splits = sorted({row.get("split", "dev") for row in rows})
    chosen = {"each": [*splits, "all"], "all": ["all"]}.get(args.split, [args.split])
    missed = False
    for split in chosen:
        part = rows if split == "all" else [r for r in rows if r.get("split", "dev") == split]
        print(f"\n[{split}]")
        numbers = evaluate(part, router, args.errors)
        missed |= any(numbers[k] < v for k, v in TARGETS.items())
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
