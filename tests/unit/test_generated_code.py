"""The committed protobuf/gRPC code is exactly what the .proto generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_committed_generated_code_matches_the_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
