"""``gpuwarden certs``: the certificates it makes carry the right names, roles and usages,
and they work for a real mTLS collector, agent and query client."""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gpuwarden.common.roles import role_from_uris
from gpuwarden.common.tls import TlsFiles
from gpuwarden.query import QueryClient
from tests.helpers import Proc, free_port, run_gpuwarden, wait_for_sync
from tests.pki import TestCA


def certs(*args: str) -> subprocess.CompletedProcess[str]:
    return run_gpuwarden("certs", *args, timeout=60)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def ou(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    r = certs(
        str(d),
        "--collector-host",
        "localhost",
        "--collector-host",
        "127.0.0.1",
        "--node",
        "gpu01",
        "--node",
        "gpu02",
        "--admin",
        "alice",
        "--reader",
        "grafana",
    )
    assert r.returncode == 0, r.stderr
    assert f"made site CA {d}/ca.pem" in r.stdout
    return d


def test_files_are_written_with_private_keys_readable_by_their_owner_only(pki: Path) -> None:
    names = sorted(p.name for p in pki.iterdir())
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("ca", "collector", "node-gpu01", "node-gpu02", "admin-alice", "reader-grafana")
        for ext in ("pem", "key")
    )
    for key in pki.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_the_ca_can_sign_certificates_and_nothing_else(pki: Path) -> None:
    ca = load(pki / "ca.pem")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert ca.subject == ca.issuer and cn(ca) == "gpuwarden site CA"


@pytest.mark.parametrize(
    ("stem", "role", "name", "usage"),
    [
        ("collector", "collector", "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
        ("node-gpu01", "node", "gpu01", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("admin-alice", "admin", "alice", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("reader-grafana", "reader", "grafana", ExtendedKeyUsageOID.CLIENT_AUTH),
    ],
)
def test_each_certificate_names_its_subject_role_and_usage(
    pki: Path, stem: str, role: str, name: str, usage: x509.ObjectIdentifier
) -> None:
    ca = load(pki / "ca.pem")
    cert = load(pki / f"{stem}.pem")
    cert.verify_directly_issued_by(ca)
    assert (cn(cert), ou(cert)) == (name, role)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [f"gpuwarden:role:{role}"] and role_from_uris(uris) == role
    if role == "collector":
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    purpose = "sslserver" if role == "collector" else "sslclient"
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki / "ca.pem"), "-purpose", purpose],
        input=(pki / f"{stem}.pem").read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_a_second_run_reuses_the_ca_and_never_overwrites_silently(pki: Path) -> None:
    ca_before = (pki / "ca.pem").read_bytes()
    r = certs(str(pki), "--node", "gpu03")
    assert r.returncode == 0, r.stderr
    assert f"using site CA {pki}/ca.pem" in r.stdout
    assert (pki / "ca.pem").read_bytes() == ca_before
    load(pki / "node-gpu03.pem").verify_directly_issued_by(load(pki / "ca.pem"))
    before = (pki / "node-gpu01.pem").read_bytes()
    r = certs(str(pki), "--node", "gpu01")
    assert r.returncode == 1 and "node-gpu01.pem exists; not overwritten" in r.stderr
    assert (pki / "node-gpu01.pem").read_bytes() == before
    r = certs(str(pki), "--node", "gpu01", "--force")
    assert r.returncode == 0 and (pki / "node-gpu01.pem").read_bytes() != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node", "gpu 01"], "argument --node: 'gpu 01' is not a valid node name"),
        (["--admin", "al/ice"], "argument --admin: 'al/ice' is not a valid name"),
        (["--collector-host", "a_b:1"], "'a_b:1' is neither an IP address nor a DNS name"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    r = certs(str(tmp_path / "pki"), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "pki").exists()


def test_certificates_work_for_a_real_mtls_collector_agent_and_reader(
    pki: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    config = tmp_path / "gpuwarden.toml"
    config.write_text(
        f'[collector]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'tls_ca = "{pki}/ca.pem"\ntls_cert = "{pki}/collector.pem"\n'
        f'tls_key = "{pki}/collector.key"\n'
        f'[agent]\nnode = "gpu01"\ncollector = "localhost:{port}"\nsampler = "sim"\n'
        f'slurm = "off"\nspool_dir = "{tmp_path / "spool"}"\nreport_interval = "1s"\n'
        f'tls_ca = "{pki}/ca.pem"\ntls_cert = "{pki}/node-gpu01.pem"\n'
        f'tls_key = "{pki}/node-gpu01.key"\n'
    )
    collector = Proc(["collector", "--config", str(config)], tmp_path / "collector.log")
    procs.append(collector)
    wait_for_sync(lambda: "listening" in collector.output(), 120)
    agent = Proc(["agent", "--config", str(config)], tmp_path / "agent.log")
    procs.append(agent)

    def snapshot_with(stem: str) -> str:
        tls = TlsFiles(ca=pki / "ca.pem", cert=pki / f"{stem}.pem", key=pki / f"{stem}.key")

        async def go() -> str:
            async with QueryClient(f"localhost:{port}", tls=tls) as client:
                snap = await client.snapshot()
            return " ".join(f"{n.node}:{len(n.gpus)}" for n in snap.nodes)

        return asyncio.run(go())

    # The node is listed from its stream's start, its GPUs from its first stored report:
    # wait for what is asserted, not for the first sight of the node.
    def shows_the_node() -> bool:
        try:
            return snapshot_with("reader-grafana") == "gpu01:4"
        except grpc.aio.AioRpcError as exc:  # a collector too busy to answer in time: again
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            return False

    wait_for_sync(shows_the_node, 120)
    assert re.fullmatch(r"gpu01:4", snapshot_with("admin-alice"))
    # A certificate from another CA is refused at the handshake.
    other = TestCA(tmp_path / "other").issue("gpu01")
    foreign = TlsFiles(ca=pki / "ca.pem", cert=other.cert, key=other.key)

    async def with_foreign() -> None:
        async with QueryClient(f"localhost:{port}", tls=foreign, timeout_s=5) as client:
            await client.snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(with_foreign())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in agent.output(), agent.output()
    assert agent.terminate() == 0
    assert collector.terminate() == 0
