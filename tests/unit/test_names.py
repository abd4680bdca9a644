"""Names checked at the edge (node, person, host) and the role a certificate names."""

from __future__ import annotations

import pytest

from gpuwarden.common.names import check_host, check_node, check_person
from gpuwarden.common.roles import role_from_uris, role_uri


@pytest.mark.parametrize("good", ["gpu01", "g.p_u-1", "A" * 64])
def test_node_names_the_collector_accepts(good: str) -> None:
    assert check_node(good) == good


@pytest.mark.parametrize("bad", ["", "-gpu", "gpu 01", "gpu01\n", "gpü01", "a" * 65, "a/b"])
def test_node_names_the_collector_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a valid node name"):
        check_node(bad)


def test_people_and_hosts() -> None:
    assert check_person("alice@site") == "alice@site"
    for bad in ("", "al ice", "../x", "x" * 65):
        with pytest.raises(ValueError, match="is not a valid name"):
            check_person(bad)
    for host in ("gpu-mgmt", "gpu-mgmt.example.org", "10.0.0.5", "::1"):
        assert check_host(host) == host
    for bad in ("", "a_b", "-x.org", "x..org", "a" * 64 + ".org", "10.0.0.5:50051"):
        with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
            check_host(bad)


def test_the_role_is_read_back_only_when_one_is_named() -> None:
    assert role_from_uris([role_uri("reader")]) == "reader"
    assert role_from_uris([b"gpuwarden:role:admin", "spiffe://x"]) == "admin"
    assert role_from_uris([]) is None
    assert role_from_uris(["gpuwarden:role:root"]) is None
    assert role_from_uris([role_uri("admin"), role_uri("reader")]) is None
    with pytest.raises(ValueError, match="unknown role"):
        role_uri("root")
