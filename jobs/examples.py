"""Examples that end each command's `--help` (argparse epilogs): one or two real command lines each.

Keyed by the command as typed after `copyscope` ("benchmark make" for a nested one; "copyscope" itself
for the top-level help). `attach_examples`
puts them on a built parser; tests check that every command has one.
"""

from __future__ import annotations

import argparse

EXAMPLES: dict[str, str] = {
    "copyscope": """\
examples:
  copyscope demo                                         # the whole pipeline on packaged photos, about a minute
  copyscope index photos/ --out refs.idx && copyscope match uploads/ --index refs.idx --out matches.csv
  copyscope doctor                                       # what it found: versions, devices, models""",
    "index": """\
examples:
  copyscope index photos/ --out refs.idx                  # SSCD descriptors + RootSIFT features, flat index
  copyscope index photos/ --out refs.idx --index-type hnsw --model sscd_distilled   # faster model, ANN index""",
    "match": """\
examples:
  copyscope match uploads/ --index refs.idx --out matches.csv          # full re-ranking (default)
  copyscope match uploads/ --index refs.idx --out matches.csv --rerank none --k 5 --explain evidence.jsonl
  copyscope match backlog/ --data srv/ --out decisions.csv             # a backlog against a service's banks""",
    "evaluate": """\
examples:
  copyscope evaluate bench/ground_truth.csv matches.csv --out eval/ --meta bench/query_meta.csv
  # then open eval/report.html (metrics, PR curve, misses, false positives)""",
    "show": """\
examples:
  copyscope show uploads/meme.jpg photos/cat.jpg --out pair.png       # inliers and matched regions drawn
  copyscope show query.png reference.png --out pair.png --local-features orb""",
    "dedup": """\
examples:
  copyscope dedup photos/ --out dedup/               # report only: dedup/groups.json, plan.csv, report.html
  copyscope dedup photos/ --out dedup/ --action move --move-to dupes/   # move copies linked at >= 0.9, keep the largest
  copyscope dedup photos/ --out dedup/ --act-threshold 0.99 --review-threshold 0.3   # act on fewer, review more""",
    "benchmark": """\
examples:
  copyscope benchmark make ../shared/photos --out bench/ --n-references 200 --n-queries 200""",
    "benchmark make": """\
examples:
  copyscope benchmark make ../shared/photos --out bench/              # 40 % references, 40 % queries
  copyscope benchmark make photos/ --out bench/ --n-references 50 --n-queries 40 --seed 1""",
    "demo": """\
examples:
  copyscope demo                     # about a minute: writes ./copyscope-demo/ and prints the results
  copyscope demo --out /tmp/demo     # somewhere else (an earlier demo there is replaced)""",
    "serve": """\
examples:
  copyscope serve --data srv/                         # SQLite in srv/, http://127.0.0.1:8321 (/docs, /review)
  copyscope serve --data /var/lib/cs1 --db postgresql://cs@db:5432/copyscope --host 0.0.0.0   # one of several""",
    "keys": """\
examples:
  copyscope keys create --data srv/ --role curator --name alice    # prints the key once
  copyscope keys revoke --data srv/ --name alice""",
    "keys create": """\
examples:
  copyscope keys create --data srv/ --role matcher --name uploads-api     # the key is the only line on stdout""",
    "keys list": """\
examples:
  copyscope keys list --data srv/ --db postgresql://cs@db:5432/copyscope""",
    "keys revoke": """\
examples:
  copyscope keys revoke --data srv/ --name uploads-api      # its requests get 401 from now on""",
    "banks": """\
examples:
  copyscope banks import known/ --data srv/ --bank removed-posts   # content_id = image id
  copyscope banks list --data srv/""",
    "banks import": """\
examples:
  copyscope banks import catalogue/ --data srv/ --bank rights-holder --ray on""",
    "banks list": """\
examples:
  copyscope banks list --data srv/                    # every bank with its thresholds and item count""",
    "doctor": """\
examples:
  copyscope doctor                   # versions, devices, Ray address, model files; exit 1 with the fix
  copyscope doctor --json            # the same as one JSON object""",
}


def attach_examples(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Set the epilog of `parser` (the top-level one: key "copyscope") and of every (nested) subcommand that has
    examples, keeping their line breaks."""
    if not prefix and "copyscope" in EXAMPLES:
        parser.epilog = EXAMPLES["copyscope"]
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            key = f"{prefix}{name}"
            if key in EXAMPLES:
                sub.epilog = EXAMPLES[key]
                sub.formatter_class = argparse.RawDescriptionHelpFormatter
            attach_examples(sub, f"{key} ")
