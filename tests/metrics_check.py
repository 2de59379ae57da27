#!/usr/bin/python3
"""metrics_check: reads a Prometheus text exposition (format 0.0.4) on stdin, parses it with
prometheus_client's own parser (Debian's python3-prometheus-client) and lints it the way
`promtool check metrics` does: HELP and TYPE on every family, counters named *_total, legal metric and
label names, one HELP and one TYPE per family, only the escapes the format defines, no series twice. Prints each problem on a line; exit 0 when clean, 1 otherwise."""
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


ESCAPE = re.compile(r"\\(.?)")


def problems(text):
    declared = {"HELP": set(), "TYPE": set()}
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == "#" and parts[1] in declared:
            if parts[2] in declared[parts[1]]:
                out.append(f"{parts[2]}: second {parts[1]} line")
            declared[parts[1]].add(parts[2])
        # HELP text may escape \\ and \n; label values \\, \" and \n (the text format 0.0.4).
        if line.startswith("#") and not line.startswith("# HELP "):
            continue  # TYPE lines have no escapes, other comments are free text
        allowed = "\\n" if line.startswith("# HELP ") else "\\\"n"
        if any(m.group(1) not in allowed or not m.group(1) for m in ESCAPE.finditer(line)):
            out.append(f"invalid escape in: {line}")
    if out:
        return out
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's only signal of malformed input
        return [f"parse error: {e}"]
    seen = set()
    for fam in families:
        # The parser strips _total from a counter's family name; the exposed name keeps it.
        exposed = fam.name + "_total" if fam.type == "counter" else fam.name
        if not METRIC_NAME.match(fam.name):
            out.append(f"{exposed}: illegal metric name")
        if exposed not in declared["HELP"] or not fam.documentation:
            out.append(f"{exposed}: no HELP text")
        if exposed not in declared["TYPE"] or fam.type == "unknown":
            out.append(f"{exposed}: no TYPE")
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith("_total"):
                out.append(f"{s.name}: counter metrics should have \"_total\" suffix")
            for label in s.labels:
                if not LABEL_NAME.match(label) or label.startswith("__"):
                    out.append(f"{s.name}: illegal label name {label!r}")
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                out.append(f"{s.name}{s.labels}: series appears twice")
            seen.add(key)
    if not families:
        out.append("no metric families")
    return out


if __name__ == "__main__":
    found = problems(sys.stdin.read())
    for p in found:
        print(p)
    sys.exit(1 if found else 0)
