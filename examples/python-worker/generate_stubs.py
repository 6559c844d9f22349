#!/usr/bin/env python3
"""Generates the Python gRPC stubs for the gateway's API into ./generated.

The stubs are build output, not source: they are generated from the proto in
the repository's proto/ directory with grpcio-tools and are not committed.

    python generate_stubs.py [--proto-root ../../proto] [--out generated]
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO = "codepipeline_gateway/v1/job_worker.proto"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-root", type=Path, default=HERE.parent.parent / "proto")
    parser.add_argument("--out", type=Path, default=HERE / "generated")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    # google/protobuf/timestamp.proto ships inside grpcio-tools.
    well_known = resources.files("grpc_tools") / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={args.proto_root}",
            f"--proto_path={well_known}",
            f"--python_out={args.out}",
            f"--pyi_out={args.out}",
            f"--grpc_python_out={args.out}",
            str(args.proto_root / PROTO),
        ]
    )
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return code
    print(f"generated stubs for {PROTO} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
