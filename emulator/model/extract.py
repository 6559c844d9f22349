#!/usr/bin/env python3
"""Extract the CodePipeline job-worker subset of botocore's service model.

Writes emulator/model/codepipeline-job-worker.json: the service metadata, the
job-worker operations and every shape reachable from their inputs, outputs and
errors, with `documentation` keys stripped. The emulator embeds this file with
include_str! and validates requests against it.

Usage: python3 emulator/model/extract.py   (requires botocore)
"""
import gzip
import json
import os
import sys

import botocore

OPERATIONS = [
    "PutJobSuccessResult",
    "PutThirdPartyJobSuccessResult",
    "PutJobFailureResult",
    "PutThirdPartyJobFailureResult",
    "PollForJobs",
    "PollForThirdPartyJobs",
    "AcknowledgeJob",
    "AcknowledgeThirdPartyJob",
    "GetJobDetails",
    "GetThirdPartyJobDetails",
]


def strip_docs(value):
    if isinstance(value, dict):
        return {k: strip_docs(v) for k, v in value.items() if k != "documentation"}
    if isinstance(value, list):
        return [strip_docs(v) for v in value]
    return value


def shape_refs(shape):
    """Names of shapes directly referenced by a shape definition."""
    kind = shape.get("type")
    if kind == "structure":
        return [m["shape"] for m in shape.get("members", {}).values()]
    if kind == "list":
        return [shape["member"]["shape"]]
    if kind == "map":
        return [shape["key"]["shape"], shape["value"]["shape"]]
    return []


def main():
    src = os.path.join(
        os.path.dirname(botocore.__file__),
        "data", "codepipeline", "2015-07-09", "service-2.json.gz",
    )
    with gzip.open(src, "rt", encoding="utf-8") as f:
        model = json.load(f)

    operations = {}
    pending = []
    for name in OPERATIONS:
        op = model["operations"][name]
        operations[name] = strip_docs(op)
        for key in ("input", "output"):
            if key in op:
                pending.append(op[key]["shape"])
        pending.extend(e["shape"] for e in op.get("errors", []))

    shapes = {}
    while pending:
        name = pending.pop()
        if name in shapes:
            continue
        shape = model["shapes"][name]
        shapes[name] = strip_docs(shape)
        pending.extend(shape_refs(shape))

    out = {
        "version": model.get("version", "2.0"),
        "metadata": model["metadata"],
        "operations": dict(sorted(operations.items())),
        "shapes": dict(sorted(shapes.items())),
    }
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "codepipeline-job-worker.json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=False, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {dest}: {len(operations)} operations, {len(shapes)} shapes "
          f"(botocore {botocore.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
