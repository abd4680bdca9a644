"""scripts/slurm-build.sh picks its Slurm source by checksum: a vendored tarball only when
both its SHA256SUMS line and its bytes match the pinned sum, else SchedMD's release with its
own pinned sum. Run on a copy of the script outside any checkout, so that no real vendored
copy is found; nothing is built (--print-prefix)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENDORED_SHA = "f71f1e5f33a72e7864104a6857e86862eac3c4e5e348c92dd0c10dbe03a82dec"
DOWNLOAD_SHA = "8f71a55b755e41f07d0fc790e9d0c94bd810dc1b324cd308545b9a0fd5f66df6"


@pytest.fixture
def script(tmp_path: Path) -> Path:
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    copy = tmp_path / "repo" / "scripts" / "slurm-build.sh"
    shutil.copy2(REPO / "scripts" / "slurm-build.sh", copy)
    return copy


def prefix(script: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("GPUWARDEN_SLURM_SHA256", "GIT_DIR")}
    full |= {"GPUWARDEN_CACHE": str(tmp_path / "cache"), **env}
    return subprocess.run(
        [str(script), "--print-prefix"],
        capture_output=True,
        text=True,
        env=full,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )


def vendor(tmp_path: Path, content: bytes, listed_sha: str) -> Path:
    folder = tmp_path / "vendor"
    folder.mkdir()
    (folder / "slurm-25.11.7.tar.xz").write_bytes(content)
    (folder / "SHA256SUMS").write_text(f"{listed_sha}  slurm-25.11.7.tar.xz\n")
    return folder


def test_without_a_vendored_copy_the_release_download_and_its_pinned_sum_are_used(
    script: Path, tmp_path: Path
) -> None:
    proc = prefix(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{tmp_path}/cache/slurm-25.11.7-{DOWNLOAD_SHA[:12]}"


def test_a_vendored_copy_whose_bytes_do_not_match_the_pin_is_ignored(
    script: Path, tmp_path: Path
) -> None:
    # SHA256SUMS claims the pinned sum, but the bytes are something else.
    folder = vendor(tmp_path, b"not slurm", VENDORED_SHA)
    proc = prefix(script, tmp_path, GPUWARDEN_VENDOR_DIR=str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "ignoring" in proc.stderr and "slurm-25.11.7.tar.xz" in proc.stderr
    assert proc.stdout.strip().endswith(DOWNLOAD_SHA[:12])


def test_a_vendored_copy_listed_with_another_sum_is_ignored(script: Path, tmp_path: Path) -> None:
    content = b"some other tarball"
    folder = vendor(tmp_path, content, hashlib.sha256(content).hexdigest())
    proc = prefix(script, tmp_path, GPUWARDEN_VENDOR_DIR=str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "SHA256SUMS lists" in proc.stderr
    assert proc.stdout.strip().endswith(DOWNLOAD_SHA[:12])


def test_a_malformed_checksum_override_is_refused_naming_it(script: Path, tmp_path: Path) -> None:
    proc = prefix(script, tmp_path, GPUWARDEN_SLURM_SHA256="abc; rm -rf /")
    assert proc.returncode != 0
    assert "GPUWARDEN_SLURM_SHA256" in proc.stderr and "abc; rm -rf /" in proc.stderr
