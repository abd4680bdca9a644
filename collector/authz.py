"""Who may call what: a gRPC server interceptor that authenticates and authorizes every call.

Identity comes from the TLS client certificate (verified against the site CA during the
handshake) or, for researchers, from a MUNGE credential in the call's metadata:

- ``node``: ``AgentService.Report`` only, and only for its own node (certificate CN);
- ``reader``: every ``QueryService`` read;
- ``admin``: the reads and every ``AdminService`` call, each audited with the admin's name;
- ``researcher`` (MUNGE): the reads, filtered to their own jobs by the servicers, except
  the waste report (every user's figures).

A certificate's role is its SAN URI ``gpuwarden:role:ROLE``, or its CN's entry in the
collector's ``roles_file`` (which wins). The collector's own certificate, a certificate
without a role, a call without certificate or credential: refused. Servicers read the
caller from :func:`current_caller`.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

import grpc

from gpuwarden.collector.munge import MungeError, MungeVerifier
from gpuwarden.common.config import ConfigError
from gpuwarden.common.roles import role_from_uris
from gpuwarden.common.types import AuditRecord
from gpuwarden.common.wire import MUNGE_KEY

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

REPORT = "/gpuwarden.v1.AgentService/Report"
REPORT_BATCH = "/gpuwarden.v1.AgentService/ReportBatch"
QUERY_PREFIX = "/gpuwarden.v1.QueryService/"
ADMIN_PREFIX = "/gpuwarden.v1.AdminService/"
WHOAMI = QUERY_PREFIX + "Whoami"
WASTE_REPORT = QUERY_PREFIX + "GetWasteReport"  # every user's figures: not for researchers
HEALTH_PREFIX = "/grpc.health.v1.Health/"

MAPPABLE_ROLES = ("node", "reader", "admin")  # what a roles_file may grant
MAX_NAME_CHARS = 253


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller. ``via``: certificate, munge, or none (plaintext collector)."""

    name: str
    role: str
    via: str

    @property
    def researcher(self) -> bool:
        return self.role == "researcher"


class Refused(Exception):
    """A call that is not let through: the status and the message the caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A plaintext collector (demos, tests) authenticates nobody: every call is allowed.
INSECURE = Caller(name="", role="insecure", via="none")

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("gpuwarden_caller")


def current_caller() -> Caller:
    """The caller of the RPC being served (INSECURE outside an authorized call)."""
    return _caller.get(INSECURE)


def allowed(role: str, method: str) -> bool:
    """Whether ``role`` may call ``method`` (a full gRPC method name)."""
    if role == "insecure":
        return True
    if method == WHOAMI:
        return role in ("node", "reader", "admin", "researcher")
    if method in (REPORT, REPORT_BATCH):
        return role == "node"
    if method == WASTE_REPORT:
        return role in ("reader", "admin")
    if method.startswith(QUERY_PREFIX):
        return role in ("reader", "admin", "researcher")
    if method.startswith(ADMIN_PREFIX):
        return role == "admin"
    return False


def load_roles_file(path: Path) -> dict[str, str]:
    """``[roles]`` of a TOML file: certificate common name -> node, reader or admin."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"roles_file: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"roles_file: {path} is not valid TOML: {exc}") from None
    stray = sorted(k for k in doc if k != "roles")
    if stray or not isinstance(doc.get("roles", {}), dict):
        what = stray[0] if stray else "roles"
        raise ConfigError(f"roles_file: {path}: {what!r}: the file holds one [roles] table")
    out: dict[str, str] = {}
    for cn, role in doc.get("roles", {}).items():
        if not cn or len(cn) > MAX_NAME_CHARS or not cn.isprintable():
            raise ConfigError(f"roles_file: {path}: [roles] {cn!r}: not a certificate name")
        if role not in MAPPABLE_ROLES:
            raise ConfigError(
                f"roles_file: {path}: [roles] {cn!r} = {role!r}: the role must be one of "
                + ", ".join(MAPPABLE_ROLES)
            )
        out[cn] = role
    return out


def _first(values: Iterable[bytes] | None) -> str:
    first = next(iter(values or ()), b"")
    return first.decode(errors="replace")


class Authorizer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates and authorizes every call before its servicer runs.

    ``tls`` False: a plaintext collector; callers are INSECURE unless they send a MUNGE
    credential (then they are researchers). ``audit`` receives one record per admin call.
    """

    def __init__(
        self,
        *,
        tls: bool,
        roles: Mapping[str, str] | None = None,
        munge: MungeVerifier | None = None,
        audit: Callable[[AuditRecord], Awaitable[None]] | None = None,
    ) -> None:
        self.tls = tls
        self.roles = dict(roles or {})
        self.munge = munge
        self.audit = audit
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler  # unknown method (UNIMPLEMENTED); health probes are open
        credential = ""
        for key, value in details.invocation_metadata or ():
            if key == MUNGE_KEY:
                credential = value if isinstance(value, str) else value.decode(errors="replace")
        return self._wrap(handler, method, credential)

    # -- who is calling -------------------------------------------------------------------
    async def identify(self, context: Ctx, credential: str) -> Caller:
        """The caller of this call; :class:`Refused` when it proves no usable identity."""
        auth = context.auth_context()
        cn = _first(auth.get("x509_common_name"))
        if self.tls and cn:  # the handshake verified it against the site CA
            uris = list(auth.get("x509_subject_alternative_name") or []) + list(
                auth.get("peer_uri") or []
            )
            role = self.roles.get(cn) or role_from_uris(uris)
            if role is None:
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate CN={cn!r} names no gpuwarden role (SAN URI "
                    "gpuwarden:role:ROLE) and the collector's roles_file does not list it",
                )
            return Caller(name=cn, role=role, via="certificate")
        if credential:
            if self.munge is None:
                raise Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "this collector does not accept MUNGE credentials",
                )
            try:
                who = await self.munge.verify(credential)
            except MungeError as exc:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
            return Caller(name=who.user, role="researcher", via="munge")
        if not self.tls:
            return INSECURE
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "no client certificate and no MUNGE credential (gpuwarden-munge metadata)",
        )

    async def _refuse(self, context: Ctx, refused: Refused) -> NoReturn:
        self.refused += 1
        log.info("refused a call from %s: %s", context.peer(), refused.message)
        await context.abort(refused.code, refused.message)
        raise AssertionError("abort returned")  # pragma: no cover

    async def authorize(self, method: str, credential: str, context: Ctx) -> Caller:
        try:
            caller = await self.identify(context, credential)
            if not allowed(caller.role, method):
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method.rsplit('/', 1)[-1]} is not allowed for role {caller.role}"
                    + (f" ({caller.name})" if caller.name else ""),
                )
        except Refused as refused:
            await self._refuse(context, refused)
        _caller.set(caller)  # each RPC runs in its own task: this is that call's caller
        return caller

    async def _audited(self, caller: Caller, method: str, outcome: str) -> None:
        if self.audit is None or not method.startswith(ADMIN_PREFIX):
            return
        name = method.rsplit("/", 1)[-1]
        await self.audit(
            AuditRecord(
                ts=time.time(),
                job_id="",
                kind="admin",
                action=name,
                outcome=outcome,
                dry_run=False,
                gpus=(),
                detail=f"{name} called by {caller.role} {caller.name or '(anonymous)'}",
                evidence={"method": method, "role": caller.role, "via": caller.via},
                actor=caller.name or caller.role,
            )
        )

    # -- wrapping the four kinds of handler ---------------------------------------------------
    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str, credential: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        h: Any = handler
        ser = {
            "request_deserializer": h.request_deserializer,
            "response_serializer": h.response_serializer,
        }
        if h.unary_unary is not None:
            inner_uu = h.unary_unary

            async def unary_unary(request: Any, context: Ctx) -> Any:
                caller = await self.authorize(method, credential, context)
                try:
                    response = await inner_uu(request, context)
                except BaseException:
                    await self._audited(caller, method, "failed")
                    raise
                await self._audited(caller, method, "done")
                return response

            return grpc.unary_unary_rpc_method_handler(unary_unary, **ser)
        if h.unary_stream is not None:
            inner_us = h.unary_stream
            if inspect.isasyncgenfunction(inner_us):

                async def unary_stream_gen(request: Any, context: Ctx) -> AsyncIterator[Any]:
                    await self.authorize(method, credential, context)
                    async for item in inner_us(request, context):
                        yield item

                return grpc.unary_stream_rpc_method_handler(unary_stream_gen, **ser)

            async def unary_stream(request: Any, context: Ctx) -> Any:
                await self.authorize(method, credential, context)
                return await inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **ser)
        if h.stream_unary is not None:
            inner_su = h.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: Ctx) -> Any:
                caller = await self.authorize(method, credential, context)
                return await inner_su(self._own_node(caller, requests, context), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **ser)
        inner_ss = h.stream_stream
        if inspect.isasyncgenfunction(inner_ss):

            async def stream_stream_gen(
                requests: AsyncIterator[Any], context: Ctx
            ) -> AsyncIterator[Any]:
                caller = await self.authorize(method, credential, context)
                async for item in inner_ss(self._own_node(caller, requests, context), context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(stream_stream_gen, **ser)

        async def stream_stream(requests: AsyncIterator[Any], context: Ctx) -> Any:
            caller = await self.authorize(method, credential, context)
            return await inner_ss(self._own_node(caller, requests, context), context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, **ser)

    async def _own_node(
        self, caller: Caller, requests: AsyncIterator[Any], context: Ctx
    ) -> AsyncIterator[Any]:
        """A node's stream, refused at the first message for another node."""
        async for msg in requests:
            if caller.role == "node" and getattr(msg, "node", caller.name) != caller.name:
                await self._refuse(
                    context,
                    Refused(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"report for node {msg.node!r} on a connection authenticated as "
                        f"{caller.name!r}",
                    ),
                )
            yield msg
