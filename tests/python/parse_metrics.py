"""Parses a /metrics scrape with the Prometheus project's own Python parsers and prints what
they read, so the Rust test can check it against what it sent.

Usage: python parse_metrics.py FILE prometheus|openmetrics

`prometheus` uses prometheus_client.parser (the text format 0.0.4), `openmetrics` uses
prometheus_client.openmetrics.parser (OpenMetrics 1.0, which also checks the `# EOF` trailer,
counter `_total` suffixes and histogram bucket order). A parse error exits non-zero with its
traceback. Prints one JSON object:
  {"families": {NAME: TYPE, ...},
   "samples": [[SAMPLE_NAME, {LABEL: VALUE, ...}, VALUE], ...]}
"""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as prometheus_families


def main():
    path, kind = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parse = {"prometheus": prometheus_families, "openmetrics": openmetrics_families}[kind]
    families = {}
    samples = []
    for family in parse(text):
        if family.name in families:
            raise SystemExit(f"family {family.name} appears twice")
        families[family.name] = family.type
        for sample in family.samples:
            samples.append([sample.name, dict(sample.labels), sample.value])
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
