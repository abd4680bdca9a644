"""Roles, the roles file and unmunge's output, as pure functions (captured real output)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpuwarden.collector.authz import allowed, load_roles_file
from gpuwarden.collector.config import load_collector_config
from gpuwarden.collector.munge import MungeError, MungeVerifier, identity_from_unmunge
from gpuwarden.common.config import ConfigError
from gpuwarden.query.munge import MungeUnavailable, munge_credential

FIXTURES = Path(__file__).parent.parent / "fixtures" / "munge"

READS = ("GetSnapshot", "Watch", "GetHistory", "GetAudit")


@pytest.mark.parametrize(
    ("role", "may"),
    [
        ("node", {"AgentService/Report", "AgentService/ReportBatch", "QueryService/Whoami"}),
        ("reader", {f"QueryService/{r}" for r in (*READS, "Whoami")}),
        ("researcher", {f"QueryService/{r}" for r in (*READS, "Whoami")}),
        ("admin", {f"QueryService/{r}" for r in (*READS, "Whoami")} | {"AdminService/GetPolicy"}),
        ("collector", set()),
    ],
)
def test_each_role_may_call_exactly_its_methods(role: str, may: set[str]) -> None:
    every = {
        "AgentService/Report",
        "AgentService/ReportBatch",
        "AdminService/GetPolicy",
        "AdminService/Future",
    } | {f"QueryService/{r}" for r in (*READS, "Whoami")}
    got = {m for m in every if allowed(role, f"/gpuwarden.v1.{m}")}
    assert got == may | ({"AdminService/Future"} if role == "admin" else set())


def test_unmunge_success_names_the_user_of_the_uid() -> None:
    who = identity_from_unmunge((FIXTURES / "unmunge-success.txt").read_text())
    assert (who.user, who.uid) == ("root", 0)


def test_unmunge_replay_and_foreign_payload_are_refused() -> None:
    with pytest.raises(MungeError, match="Replayed credential"):
        identity_from_unmunge((FIXTURES / "unmunge-replayed.txt").read_text())
    text = (FIXTURES / "unmunge-success.txt").read_text().replace("gpuwarden-query", "sshd")
    with pytest.raises(MungeError, match="another purpose"):
        identity_from_unmunge(text)
    with pytest.raises(MungeError, match="no status"):
        identity_from_unmunge("")


def test_unmunge_uid_without_a_user_name_is_refused() -> None:
    text = (FIXTURES / "unmunge-success.txt").read_text().replace("root (0)", "? (4000123)")
    with pytest.raises(MungeError, match="UID 4000123 has no user name"):
        identity_from_unmunge(text)


def test_roles_file_maps_names_to_roles(tmp_path: Path) -> None:
    path = tmp_path / "roles.toml"
    path.write_text('[roles]\n"gpu01.site" = "node"\n"ops-ann" = "admin"\n')
    assert load_roles_file(path) == {"gpu01.site": "node", "ops-ann": "admin"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[roles]\n"x" = "root"\n', "the role must be one of node, reader, admin"),
        ('[roles]\n"x" = "collector"\n', "the role must be one of"),
        ('[roles]\n"x" = "researcher"\n', "the role must be one of"),
        ('[rolse]\n"x" = "admin"\n', "'rolse': the file holds one [roles] table"),
        ('roles = "admin"\n', "the file holds one [roles] table"),
        ('[roles]\n"a\\u0007" = "admin"\n', "not a certificate name"),
        ("[roles\n", "is not valid TOML"),
    ],
)
def test_bad_roles_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "roles.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="roles_file") as err:
        load_roles_file(path)
    assert message in str(err.value)


def test_munge_listen_is_checked(tmp_path: Path) -> None:
    base = {"insecure": True, "state_dir": str(tmp_path)}
    cfg = load_collector_config(None, {**base, "munge_listen": "0.0.0.0:50052"}, environ={})
    assert cfg.munge_listen == "0.0.0.0:50052"
    with pytest.raises(ConfigError, match="munge_listen"):
        load_collector_config(None, {**base, "munge_listen": "nohost"}, environ={})
    with pytest.raises(ConfigError, match="munge_listen: must differ from listen"):
        load_collector_config(None, {**base, "munge_listen": "127.0.0.1:50051"}, environ={})


async def test_unmunge_missing_or_hung_is_a_clear_refusal(tmp_path: Path) -> None:
    cred = "MUNGE:AwQFAAB=:"
    with pytest.raises(MungeError, match="cannot run /nonexistent/unmunge"):
        await MungeVerifier(unmunge="/nonexistent/unmunge").verify(cred)
    hung = tmp_path / "unmunge"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(MungeError, match=r"gave no answer within 0\.3 s"):
        await MungeVerifier(unmunge=str(hung), timeout_s=0.3).verify(cred)
    assert time.monotonic() - started < 10  # killed, not waited for


async def test_the_client_says_why_it_has_no_credential() -> None:
    with pytest.raises(MungeUnavailable, match="cannot run /nonexistent/munge"):
        await munge_credential(command="/nonexistent/munge")
