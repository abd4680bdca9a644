"""A report is a claim, not a fact: what the collector checks before it acts on one.

Agents run as root on their nodes, and a node's certificate lets it report only for its own
node, but what it says about its jobs is still only its word. Before an enforcing action,
:class:`Corroborator` asks Slurm (``SlurmClient.job``, i.e. ``squeue --json``) and confirms
that the job is RUNNING, on every node that reported the GPUs of the finding, holding those
GPUs there (their GRES indices), and that the facts the ladder and the exemptions read (user,
account, partition, QOS, name, batch, requeue, start time) are Slurm's. :class:`SchedulerTrust`
decides which Dask schedulers the collector may contact at all.

GPU numbering: Slurm's GRES index of a GPU is its rank by minor number among the node's
GPUs (see ``gpuwarden.slurm.gres.gres_order``), the same map the agent attributes with; when
the node's GPUs do not all carry a minor number, the NVML index is taken as the GRES index
(as the agent does). A MIG slice is named by its parent GPU's index, which Slurm's MIG GRES
does not count the same way: such a finding is not corroborated, and nothing is done.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gpuwarden.collector.ladder import Decision
from gpuwarden.common.types import JobInfo
from gpuwarden.slurm import SlurmClient, SlurmError, SlurmJob
from gpuwarden.slurm.gres import gres_order

log = logging.getLogger(__name__)

NOT_CORROBORATED = "not corroborated"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# node -> the (NVML index, minor number) of each of its GPUs, as its agent last reported
NodeGpus = Callable[[str], Sequence[tuple[int, int | None]]]
# node -> the address its agent's connection came from (None: not connected / unknown)
NodeAddress = Callable[[str], str | None]


class Uncorroborated(Exception):
    """Slurm (or the network policy) does not confirm what was reported: nothing is done."""


class SlurmUnavailable(Exception):
    """Slurm could not be asked: try again later."""


def parse_networks(
    entries: Iterable[str], key: str = "dask_trusted_networks"
) -> tuple[IpNetwork, ...]:
    """CIDRs (``10.1.0.0/16``, ``::1/128``, a bare address) -> networks; ValueError naming
    ``key`` and the entry."""
    out: list[IpNetwork] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{key}: {entry!r} is not a network (CIDR such as 10.1.0.0/16)"
            ) from None
    return tuple(out)


def _gres_index(node_gpus: Sequence[tuple[int, int | None]], nvml_index: int) -> int:
    order = gres_order(node_gpus) if node_gpus else None  # {GRES index: NVML index}
    if order is None:
        return nvml_index
    for gres, nvml in order.items():
        if nvml == nvml_index:
            return gres
    return -1


_FACTS = ("user", "account", "partition", "qos", "name", "batch", "requeue")


def _mismatches(claim: JobInfo, job: SlurmJob) -> list[str]:
    out = [
        f"{name} reported {getattr(claim, name)!r}, Slurm says {getattr(job, name)!r}"
        for name in _FACTS
        if getattr(claim, name) != getattr(job, name)
    ]
    if claim.start_time and job.start_time and claim.start_time != job.start_time:
        out.append(f"start time reported {claim.start_time}, Slurm says {job.start_time}")
    return out


class Corroborator:
    """Confirms a decision with Slurm; see the module docstring."""

    def __init__(self, slurm: SlurmClient, node_gpus: NodeGpus | None = None) -> None:
        self.slurm = slurm
        self.node_gpus = node_gpus

    def check(self, decision: Decision) -> SlurmJob:
        """Slurm's view of the job when it confirms the decision's claim. Raises
        :class:`Uncorroborated` saying what does not match, :class:`SlurmUnavailable` when
        Slurm cannot be asked."""
        claim = decision.allocation.job
        try:
            job = self.slurm.job(claim.job_id)
        except SlurmError as exc:
            raise SlurmUnavailable(f"cannot ask Slurm about job {claim.job_id}: {exc}") from None
        except ValueError as exc:
            raise Uncorroborated(str(exc)) from None
        if job is None:
            raise Uncorroborated(f"job {claim.job_id} is unknown to Slurm")
        if job.state != "RUNNING":
            raise Uncorroborated(f"job {claim.job_id} is {job.state or 'in no state'}, not RUNNING")
        problems = _mismatches(claim, job)
        gpus = decision.finding.gpus or decision.allocation.gpus
        if not gpus:
            problems.append("the finding names no GPU")
        for g in gpus:
            if g.node not in job.nodes:
                ran_on = ",".join(job.nodes) or "no node"
                problems.append(f"node {g.node} reported it, but Slurm runs it on {ran_on}")
                continue
            held = job.gpu_indices(g.node)
            layout = self.node_gpus(g.node) if self.node_gpus is not None else ()
            index = _gres_index(layout, g.index)
            if index not in held:
                problems.append(
                    f"GPU {g.uuid} (index {g.index}, GRES index {index}) on {g.node} is not "
                    f"one Slurm gave it there (IDX {','.join(map(str, held)) or 'none'})"
                )
        if problems:
            raise Uncorroborated("; ".join(problems))
        return job


@dataclass(frozen=True, slots=True)
class SchedulerTrust:
    """Which Dask schedulers the collector may contact: an address inside ``networks``
    (the site's ``dask_trusted_networks``), or the address the reporting node's own agent
    connects from (a scheduler on the worker's node). Nothing else: with no networks set, a
    scheduler on another host (a login or Jupyter node) is trusted only once the site names
    its network. Loopback is not trusted by default: a report must not steer the collector
    at services on its own host."""

    networks: tuple[IpNetwork, ...] = ()
    node_address: NodeAddress | None = None
    resolve: Callable[[str], list[str]] | None = None

    def vet(self, scheduler: str, nodes: Iterable[str]) -> tuple[str, int]:
        """The (address, port) to connect to for ``scheduler`` (``tcp://HOST:PORT``).
        Raises :class:`Uncorroborated` saying why it is not trusted."""
        scheme, sep, rest = scheduler.partition("://")
        if not sep or scheme != "tcp":
            raise Uncorroborated(
                f"dask scheduler {scheduler!r}: only tcp:// schedulers are contacted"
            )
        host, _, port_text = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if (
            not host
            or not port_text.isascii()
            or not port_text.isdigit()
            or not 0 < int(port_text) < 65536
        ):
            raise Uncorroborated(f"dask scheduler {scheduler!r} is not tcp://HOST:PORT")
        try:
            addresses = (self.resolve or _resolve)(host)
        except OSError as exc:
            raise Uncorroborated(
                f"dask scheduler {scheduler!r}: cannot resolve {host}: {exc}"
            ) from None
        own = {a for n in nodes if self.node_address and (a := self.node_address(n))}
        allowed: list[str] = []
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if text in own or any(ip in net for net in self.networks):
                allowed.append(text)
        if not addresses or len(allowed) != len(addresses):
            where = ", ".join(sorted(own)) or "unknown"
            raise Uncorroborated(
                f"dask scheduler {scheduler} ({', '.join(addresses) or 'no address'}) is not "
                f"in dask_trusted_networks and not the reporting node's address ({where})"
            )
        return allowed[0], int(port_text)


def _resolve(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})
