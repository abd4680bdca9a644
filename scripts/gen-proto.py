#!/usr/bin/env python3
"""Regenerate the committed gRPC/protobuf code in proto/v1 from proto/v1/gpuwarden.proto.

The .proto is compiled as ``gpuwarden/proto/v1/gpuwarden.proto`` so that the generated
modules import each other as ``gpuwarden.proto.v1...``. ``--check`` regenerates into a
temporary folder and exits 1 when the committed files differ.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "proto" / "v1" / "gpuwarden.proto"
OUTPUTS = ("gpuwarden_pb2.py", "gpuwarden_pb2.pyi", "gpuwarden_pb2_grpc.py")


def generate(dest: Path) -> None:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        pkg = tree / "gpuwarden" / "proto" / "v1"
        pkg.mkdir(parents=True)
        shutil.copy(SRC, pkg / SRC.name)
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{tree}",
                f"--python_out={tree}",
                f"--pyi_out={tree}",
                f"--grpc_python_out={tree}",
                str(pkg / SRC.name),
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        for name in OUTPUTS:
            shutil.copy(pkg / name, dest / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(SRC.parent)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [
            n for n in OUTPUTS if (Path(tmp) / n).read_bytes() != (SRC.parent / n).read_bytes()
        ]
    if stale:
        print("stale generated code (run scripts/gen-proto.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
