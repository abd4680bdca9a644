"""The shipped units and example configs, and the commands that write them out."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from gpuwarden.agent.config import load_agent_config
from gpuwarden.cli import main
from gpuwarden.collector.config import load_collector_config
from gpuwarden.collector.policy import load_policy
from gpuwarden.deploy import (
    EXAMPLES,
    UNITS,
    DeployError,
    check_prefix,
    example_text,
    unit_text,
    write_example,
    write_units,
)
from gpuwarden.query.config import load_client_config
from tests.helpers import REPO


def uncommented(text: str) -> str:
    """The example with every commented-out ``# key = value`` line turned on."""
    return re.sub(r"^# (\w+ = )", r"\1", text, flags=re.M)


def with_pki(text: str, pki: Path) -> str:
    return text.replace("/etc/gpuwarden/pki/", f"{pki}/")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """Empty stand-ins for the files the examples name (the loaders check they exist)."""
    d = tmp_path / "pki"
    d.mkdir()
    for name in ("ca.pem", "node.pem", "node.key", "collector.pem", "collector.key"):
        (d / name).write_text("")
    for name in ("admin-alice.pem", "admin-alice.key"):
        (d / name).write_text("")
    return d


def test_the_units_ship_in_the_package_only() -> None:
    assert not (REPO / "systemd").exists()
    assert sorted(p.name for p in (REPO / "gpuwarden" / "deploy").glob("*.service")) == sorted(
        UNITS
    )


@pytest.mark.parametrize("commented_too", [False, True])
def test_the_example_configs_load_as_they_are_and_with_every_comment_turned_on(
    tmp_path: Path, pki: Path, commented_too: bool
) -> None:
    def example(role: str) -> Path:
        text = with_pki(example_text(role), pki)
        path = tmp_path / f"{role}.toml"
        path.write_text(uncommented(text) if commented_too else text)
        return path

    agent = load_agent_config(example("agent"), environ={})
    assert agent.collector == "gpu-mgmt.example.org:50051" and not agent.insecure
    assert agent.tls_cert == f"{pki}/node.pem"
    assert agent.spool_dir == Path("/var/lib/gpuwarden-agent/spool")
    collector_file = example("collector")
    collector = load_collector_config(collector_file, environ={})
    assert collector.listen == "0.0.0.0:50051" and collector.tls_key == f"{pki}/collector.key"
    assert collector.state_dir == Path("/var/lib/gpuwarden")
    assert load_policy(collector_file, environ={}).default.enforce is False
    client = load_client_config(example("client"), environ={}, system_config=None)
    assert client.collector == "gpu-mgmt.example.org:50051"
    assert client.tls_cert == f"{pki}/admin-alice.pem"


def test_the_units_start_the_program_of_the_given_prefix_and_nothing_else_changes() -> None:
    for name in UNITS:
        shipped = unit_text(name)
        assert "ExecStart=/opt/gpuwarden/bin/gpuwarden " in shipped
        moved = unit_text(name, "/srv/venvs/gpuwarden-0.1")
        assert "ExecStart=/srv/venvs/gpuwarden-0.1/bin/gpuwarden " in moved
        assert moved.replace("/srv/venvs/gpuwarden-0.1/", "/opt/gpuwarden/") == shipped
    assert "StateDirectory=gpuwarden-agent\n" in unit_text(UNITS[0])
    assert "--config /etc/gpuwarden/agent.toml\n" in unit_text(UNITS[0])
    assert "StateDirectory=gpuwarden\n" in unit_text(UNITS[1])
    assert "--config /etc/gpuwarden/collector.toml\n" in unit_text(UNITS[1])


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("opt/gpuwarden", "absolute path"),
        ("/opt/gpu warden", "only letters"),
        ("/opt/%h", "only letters"),
        ("/opt/gpuwarden\nExecStartPre=/bin/rm", "only letters"),
        ('/opt/"x"', "only letters"),
        ("/opt/gpuwarden/", "normalised"),
        ("/opt//gpuwarden", "normalised"),
        ("/opt/../gpuwarden", "normalised"),
        ("/", "normalised"),
    ],
)
def test_a_prefix_that_a_unit_line_cannot_hold_as_it_is_is_refused(prefix: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_prefix(prefix)
    with pytest.raises(ValueError, match=why):
        unit_text(UNITS[0], prefix)


def test_units_are_written_once_and_not_overwritten_without_force(tmp_path: Path) -> None:
    written = write_units(tmp_path, "/srv/gw")
    assert written == [tmp_path / n for n in UNITS]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    (tmp_path / UNITS[1]).unlink()
    (tmp_path / UNITS[0]).write_text("site edit\n")
    with pytest.raises(DeployError, match="already there, nothing written"):
        write_units(tmp_path)
    # Refused as a whole: the missing unit was not written either.
    assert not (tmp_path / UNITS[1]).exists()
    assert (tmp_path / UNITS[0]).read_text() == "site edit\n"
    write_units(tmp_path, force=True)
    assert (tmp_path / UNITS[0]).read_text() == unit_text(UNITS[0])


def test_force_does_not_write_through_a_link_in_place_of_a_unit(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    dest = tmp_path / "units"
    dest.mkdir()
    (dest / UNITS[0]).symlink_to(victim)
    with pytest.raises(DeployError, match="already there"):
        write_units(dest)
    with pytest.raises(OSError, match="symbolic links"):
        write_units(dest, force=True)
    assert victim.read_text() == "keep\n"


def test_units_go_only_into_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=f"{tmp_path}/nope: no such folder"):
        write_units(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("role", sorted(EXAMPLES))
def test_an_example_config_goes_into_a_folder_or_a_file_with_its_mode(
    tmp_path: Path, role: str
) -> None:
    into_folder = write_example(role, tmp_path)
    assert into_folder == tmp_path / f"{role}.toml"
    assert into_folder.read_text() == example_text(role)
    mode = stat.S_IMODE(into_folder.stat().st_mode)
    assert mode == {"agent": 0o600, "collector": 0o640, "client": 0o644}[role]
    as_file = write_example(role, tmp_path / "site.toml")
    assert as_file.read_text() == example_text(role)
    with pytest.raises(DeployError, match=f"{as_file}: already there"):
        write_example(role, as_file)
    with pytest.raises(DeployError, match="no such folder"):
        write_example(role, tmp_path / "nope" / "x.toml")


def test_the_commands_write_print_refuse_and_name_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["systemd-units", "--dest", str(tmp_path), "--prefix", "/srv/gw"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"wrote {tmp_path / n}" for n in UNITS]
    assert "/srv/gw/bin/gpuwarden is not an executable file yet" in err

    assert main(["systemd-units", "--dest", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "--force to overwrite" in err
    assert main(["systemd-units", "--dest", str(tmp_path), "--force"]) == 0
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        main(["systemd-units", "--dest", str(tmp_path), "--prefix", "relative"])
    assert exit_.value.code == 2
    assert "argument --prefix: 'relative': the prefix must be an absolute path" in (
        capsys.readouterr().err
    )

    assert main(["example-config", "agent"]) == 0
    assert capsys.readouterr().out == example_text("agent")
    assert main(["example-config", "client", "--dest", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'client.toml'}\n"
    assert main(["example-config", "client", "--dest", str(tmp_path)]) == 1
    assert "already there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["example-config", "slurmd"])
    assert "invalid choice: 'slurmd'" in capsys.readouterr().err


def test_a_prefix_hidden_from_the_services_gets_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["systemd-units", "--dest", str(tmp_path), "--prefix", "/home/alice/gw"]) == 0
    assert "below /home, which the units hide from the services" in capsys.readouterr().err
    assert os.access(tmp_path / UNITS[0], os.R_OK)
