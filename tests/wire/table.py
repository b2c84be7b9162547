"""Checks that rollout_lb.proto says exactly what docs/contract.md's wire table says.

Usage: table.py CONTRACT_MD PROTO. Exits 0 when every enum value and message field (name, number,
type, repeated) and the set of messages agree; prints each difference and exits 1 otherwise.
"""
import re
import sys

contract, proto = sys.argv[1], sys.argv[2]


def from_table(path):
    """{name: set of (field, number, type)} from the table after the wire-table marker."""
    lines = open(path, encoding="utf-8").read().split("<!-- wire-table:", 1)[1].splitlines()
    rows = []
    for line in lines[1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break  # the table ends at its first non-table line
    types = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("message", "---"):
            continue
        names, body = cells
        if names.startswith("enum "):
            entries = {(m.group(1), int(m.group(2)), "enum")
                       for m in re.finditer(r"(\w+) = (\d+)", body)}
            types[names[5:]] = entries
            continue
        body = re.sub(r"oneof \w+ \{(.*)\}", r"\1", body)
        entries = set()
        for m in re.finditer(r"(\w+) = (\d+) : (repeated )?(\w+)", body):
            entries.add((m.group(1), int(m.group(2)), (m.group(3) or "") + m.group(4)))
        for name in names.split(","):
            types[name.strip()] = entries
    return types


def from_proto(path):
    """The same shape from the proto's one-line enums and messages."""
    text = open(path, encoding="utf-8").read()
    types = {}
    for m in re.finditer(r"^(enum|message) (\w+) \{(.*)\}\s*$", text, re.M):
        kind, name, body = m.groups()
        if kind == "enum":
            types[name] = {(v, int(n), "enum") for v, n in re.findall(r"(\w+) = (\d+);", body)}
        else:
            body = re.sub(r"oneof \w+ \{(.*)\}", r"\1", body)
            types[name] = {
                (field, int(number), (rep or "") + typ)
                for rep, typ, field, number in re.findall(
                    r"(repeated )?(\w+) (\w+) = (\d+);", body)
            }
    return types


table, generated = from_table(contract), from_proto(proto)
problems = []
for name in sorted(set(table) | set(generated)):
    if name not in generated:
        problems.append(f"{name}: in the table, not in {proto}")
    elif name not in table:
        problems.append(f"{name}: in {proto}, not in the table")
    elif table[name] != generated[name]:
        problems.append(f"{name}: table {sorted(table[name])} != proto {sorted(generated[name])}")
for problem in problems:
    print(f"table.py: {problem}", file=sys.stderr)
if not table:
    print("table.py: no wire table found", file=sys.stderr)
    sys.exit(1)
if problems:
    sys.exit(1)
print(f"table.py: {len(table)} types agree with {contract}")
