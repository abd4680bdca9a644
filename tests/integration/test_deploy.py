"""The README's "Deploying at a site", followed on this machine as far as it goes without
systemd as PID 1: a wheel installed into a venv standing in for /opt/gpuwarden, units and
example configs written by the installed package, certificates from ``gpuwarden certs``,
``systemd-analyze verify`` on the units, then the collector and an agent started with the
units' own ExecStart= lines and a first ``gpuwarden status`` through the client config.

Where the walkthrough uses /etc/gpuwarden and /var/lib, the test uses folders under tmp_path
(mapped explicitly below); nothing outside tmp_path is written.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakenvml import FakeNvmlState
from tests.helpers import REPO, Proc, copy_of_the_repository, free_port

UNITS = ("gpuwarden-agent.service", "gpuwarden-collector.service")
EXAMPLE_HOST = "gpu-mgmt.example.org:50051"  # the collector address in the shipped examples


@dataclass(frozen=True)
class Site:
    prefix: Path  # stands in for /opt/gpuwarden
    etc: Path  # stands in for /etc/gpuwarden
    units: Path  # stands in for /etc/systemd/system

    @property
    def gpuwarden(self) -> Path:
        return self.prefix / "bin" / "gpuwarden"

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``gpuwarden ARGS`` as installed, run from a folder outside the repository."""
        return subprocess.run(
            [str(self.gpuwarden), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.etc,
            env={**os.environ, **(env or {})},
        )


def readme_deployment_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Deploying at a site")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def systemd_analyze() -> str:
    """The systemd-analyze program; installed from Debian's ``systemd`` package if missing."""
    found = shutil.which("systemd-analyze")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "systemd"],
            capture_output=True,
            timeout=600,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(
            "systemd-analyze is needed to check the units and could not be installed: "
            "apt-get install systemd (as root), then run this test again"
        )
    return found


def python(*argv: str) -> str:
    """Run a setup step (pip, venv, a probe) outside the repository; its stdout."""
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, check=False, cwd=Path(argv[0]).parent
    )
    assert r.returncode == 0, f"{shlex.join(argv)}:\n{r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """Step 1 of the walkthrough: a wheel built from the sources, installed into a venv."""
    tmp = tmp_path_factory.mktemp("site")
    src = copy_of_the_repository(tmp / "src")
    dist = tmp / "dist"
    # `pip wheel --no-deps -w dist .`, offline: setuptools comes from the test venv.
    python(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(dist),
        str(src),
    )
    (wheel,) = dist.glob("gpuwarden-*.whl")

    prefix = tmp / "gpuwarden-venv"
    python(sys._base_executable, "-m", "venv", "--without-pip", str(prefix))
    venv_python = str(prefix / "bin" / "python")
    # The venv gets its dependencies (and pip) from the test venv, so nothing is downloaded;
    # gpuwarden itself comes from the wheel, installed into the venv's own site-packages,
    # which comes first on sys.path.
    purelib = Path(
        python(venv_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    (purelib / "gpuwarden-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python(
        venv_python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--ignore-installed",
        f"{wheel}[certs]",
    )

    etc, units = tmp / "etc" / "gpuwarden", tmp / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    units.mkdir(parents=True)
    s = Site(prefix=prefix, etc=etc, units=units)
    where = s.run("--version")
    assert where.returncode == 0, where.stderr
    origin = python(venv_python, "-c", "import gpuwarden.deploy as d; print(d.__file__)")
    assert origin.startswith(str(purelib)), f"gpuwarden imported from {origin}, not the venv"
    return s


def test_the_readme_deployment_section_names_the_commands_this_test_follows() -> None:
    section = readme_deployment_section()
    for command in (
        "python3 -m venv /opt/gpuwarden",
        "pip wheel --no-deps -w dist .",
        "/opt/gpuwarden/bin/pip install",
        "gpuwarden certs /etc/gpuwarden/pki",
        "gpuwarden example-config collector --dest /etc/gpuwarden",
        "gpuwarden example-config agent --dest /etc/gpuwarden",
        "gpuwarden example-config client --dest",
        "gpuwarden systemd-units --dest /etc/systemd/system",
        "systemd-analyze verify",
        "systemctl daemon-reload",
        "systemctl enable --now gpuwarden-collector",
        "systemctl enable --now gpuwarden-agent",
        "gpuwarden status",
    ):
        assert command in section, command


def test_the_installed_package_writes_units_that_systemd_analyze_verify_accepts(
    site: Site,
) -> None:
    analyze = systemd_analyze()
    r = site.run("systemd-units", "--dest", str(site.units), "--prefix", str(site.prefix))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"wrote {site.units / name}" for name in UNITS]
    # The venv lives under /tmp here, which the units hide from the services: it says so.
    assert "PrivateTmp=yes" in r.stderr
    for name in UNITS:
        text = (site.units / name).read_text()
        assert f"ExecStart={site.gpuwarden} " in text
        assert "/opt/gpuwarden" not in text
    # No PID 1 systemd is needed: verify loads the units offline and checks ExecStart=.
    verified = subprocess.run(
        [analyze, "verify", *(str(site.units / name) for name in UNITS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout + verified.stderr == ""

    again = site.run("systemd-units", "--dest", str(site.units), "--prefix", str(site.prefix))
    assert again.returncode == 1
    assert "already there, nothing written (--force to overwrite)" in again.stderr


def exec_start(unit: Path, etc: Path) -> list[str]:
    """The unit's ExecStart= command line, its /etc/gpuwarden paths mapped to ``etc``."""
    (line,) = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    return [a.replace("/etc/gpuwarden/", f"{etc}/") for a in argv]


def edit(path: Path, *replacements: tuple[str, str]) -> None:
    """What the site does in an editor: each old text must be there, and is replaced."""
    text = path.read_text()
    for old, new in replacements:
        assert old in text, f"{path.name}: {old!r} not found"
        text = text.replace(old, new)
    path.write_text(text)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET (Type=notify units)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.settimeout(0.2)
    yield s
    s.close()


def wait_ready(sock: socket.socket, proc: Proc, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.p.poll() is None, f"exited with {proc.p.returncode}:\n{proc.output()}"
        try:
            if b"READY=1" in sock.recv(4096).split(b"\n"):
                return
        except TimeoutError:
            continue
    raise AssertionError(f"no READY=1 within {timeout_s} s:\n{proc.output()}")


def test_a_site_deployed_as_the_readme_says_shows_its_node_in_status(
    site: Site,
    tmp_path: Path,
    fake_nvml: FakeNvmlState,
    procs: list[Proc],
    notify_socket: socket.socket,
) -> None:
    units = tmp_path / "system"
    units.mkdir()
    assert (
        site.run("systemd-units", "--dest", str(units), "--prefix", str(site.prefix)).returncode
        == 0
    )

    # 2. Certificates: the site CA, the collector (by the names agents use), a node, an admin.
    pki = tmp_path / "pki"
    made = site.run(
        "certs", str(pki), "--collector-host", "localhost", "--node", "gpu01", "--admin", "alice"
    )
    assert made.returncode == 0, made.stderr
    # Each node gets the CA and its own pair as node.pem / node.key.
    shutil.copy2(pki / "node-gpu01.pem", pki / "node.pem")
    shutil.copy2(pki / "node-gpu01.key", pki / "node.key")

    # 3. Configs from the installed examples, edited as the README says.
    etc = tmp_path / "etc"
    etc.mkdir()
    for role in ("collector", "agent", "client"):
        r = site.run("example-config", role, "--dest", str(etc))
        assert r.returncode == 0 and r.stdout == f"wrote {etc / role}.toml\n", r.stderr
    port = free_port()
    address = f"localhost:{port}"
    pki_paths = ("/etc/gpuwarden/pki/", f"{pki}/")
    edit(
        etc / "collector.toml",
        ('listen = "0.0.0.0:50051"', f'listen = "127.0.0.1:{port}"'),
        pki_paths,
    )
    edit(
        etc / "agent.toml",
        (EXAMPLE_HOST, address),
        ('# node = "gpu01"', 'node = "gpu01"'),
        pki_paths,
    )
    edit(etc / "client.toml", (EXAMPLE_HOST, address), pki_paths)
    # The client file goes where `gpuwarden status` looks for it: ~/.config/gpuwarden/.
    xdg = tmp_path / "xdg"
    (xdg / "gpuwarden").mkdir(parents=True)
    shutil.move(etc / "client.toml", xdg / "gpuwarden" / "client.toml")

    # 4. The units' ExecStart= lines, run as plain processes. StateDirectory= and the
    # EnvironmentFile= overrides are stood in for by GPUWARDEN_* variables.
    collector_argv = exec_start(units / "gpuwarden-collector.service", etc)
    agent_argv = exec_start(units / "gpuwarden-agent.service", etc)
    assert collector_argv[0] == agent_argv[0] == str(site.gpuwarden)
    notify = {"NOTIFY_SOCKET": notify_socket.getsockname()}
    collector = Proc(
        collector_argv[1:],
        tmp_path / "collector.log",
        {**notify, "GPUWARDEN_COLLECTOR_STATE_DIR": str(tmp_path / "var-lib-gpuwarden")},
        program=collector_argv[:1],
    )
    procs.append(collector)
    wait_ready(notify_socket, collector)
    agent = Proc(
        agent_argv[1:],
        tmp_path / "agent.log",
        {
            **fake_nvml.env(),
            **notify,
            "GPUWARDEN_AGENT_SPOOL_DIR": str(tmp_path / "var-lib-gpuwarden-agent" / "spool"),
            "GPUWARDEN_AGENT_REPORT_INTERVAL": "1s",
            # This machine's own Slurm does not know a node gpu01.
            "GPUWARDEN_AGENT_SLURM": "off",
        },
        program=agent_argv[:1],
    )
    procs.append(agent)
    wait_ready(notify_socket, agent)

    # 5. A first look with the client config, over mTLS with the admin's certificate.
    env = {"XDG_CONFIG_HOME": str(xdg)}

    def node_row(stdout: str) -> list[str]:
        return next((x.split() for x in stdout.splitlines() if x.startswith("gpu01")), [])

    def shown(stdout: str) -> bool:
        # The node row: connected, Slurm off as configured, its four (fake) GPUs free.
        row = node_row(stdout)
        return row[:3] == ["gpu01", "yes", "off"] and "...." in row

    # Wait for the row asserted below, not the first sight of the node: its stream may
    # show before its first report is stored, and on a loaded machine for a while.
    deadline = time.monotonic() + 120
    status = site.run("status", env=env)
    while not shown(status.stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = site.run("status", env=env)
    assert status.returncode == 0, status.stderr
    assert shown(status.stdout), status.stdout
    assert "nodes 1  GPUs 4" in status.stdout, status.stdout
    assert collector.p.poll() is None and agent.p.poll() is None

    assert agent.terminate() == 0, agent.output()
    assert collector.terminate() == 0, collector.output()
