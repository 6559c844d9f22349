#!/usr/bin/env python3
"""Regenerates the generated parts of helm/codepipeline-gateway/README.md.

The version table comes from Chart.yaml and the values table from the
`# --` comments in values.yaml (the helm-docs convention), so neither can
drift from what the chart ships. tests/helm checks that the README is what
this script writes.

    .venv-helm/bin/python scripts/chart-readme.py          # rewrite README.md
    .venv-helm/bin/python scripts/chart-readme.py --check  # exit 1 if stale

Needs PyYAML (in tests/helm/requirements.txt).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "codepipeline-gateway"
# Defaults longer than this are left to values.yaml.
LONGEST_DEFAULT = 60


def documented_values(values_text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a `# --` comment above it."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    description: str | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -- "):
            description = stripped[len("# -- ") :]
            continue
        if stripped.startswith("#"):
            continue  # an example or a section comment under the description
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            if stripped:
                description = None
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if description is not None:
            out.append((".".join(name for _, name in stack), description))
        description = None
    return out


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def show_default(value: Any) -> str:
    shown = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return "see values.yaml" if len(shown) > LONGEST_DEFAULT else shown


def outside_code(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


def values_table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, description in documented_values(values_text):
        if "<" in outside_code(description):
            # Markdown would take it for an HTML tag and hide it.
            raise SystemExit(f"values.yaml: put the <...> in {key}'s comment in backticks")
        default = show_default(lookup(values, key)).replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {description.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def versions_table(chart: dict[str, Any]) -> str:
    return (
        "| | |\n|---|---|\n"
        f"| Chart version | {chart['version']} |\n"
        f"| App version | {chart['appVersion']} (`image.tag` defaults to it) |\n"
    )


def replace_between(text: str, name: str, body: str) -> str:
    start, end = f"<!-- generated:{name} -->\n", f"<!-- end generated:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md lacks the {start.strip()} ... {end} markers")
    return pattern.sub(lambda _: start + body + end, text)


def generate(readme: str) -> str:
    values_text = (CHART / "values.yaml").read_text()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    readme = replace_between(readme, "versions", versions_table(chart))
    return replace_between(readme, "values", values_table(values_text))


def main() -> int:
    path = CHART / "README.md"
    current = path.read_text()
    wanted = generate(current)
    if "--check" in sys.argv[1:]:
        if current != wanted:
            print(f"{path} is stale: run scripts/chart-readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
