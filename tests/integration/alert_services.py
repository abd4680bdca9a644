"""Real alert services for the tests, on 127.0.0.1: Debian's mosquitto with a password file
and the shipped ``%u`` ACL (installed by scripts/mosquitto-install.sh when missing), and an
in-process aiosmtpd SMTP server that can be told to refuse mail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_USER = "gpuwarden-collector"
PASSWORDS = {COLLECTOR_USER: "collector-pw", "alice": "alice-pw", "bob": "bob-pw"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto_bin() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        subprocess.run([str(REPO / "scripts" / "mosquitto-install.sh")], check=True, timeout=600)
        found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return found


class Broker:
    """mosquitto on 127.0.0.1:port with the users of PASSWORDS and the shipped ACL; can be
    stopped and started again on the same port."""

    def __init__(self) -> None:
        self.binary = _mosquitto_bin()
        # mosquitto started as root drops to the mosquitto user: its files must be readable
        # by it, so they live in a folder of their own outside pytest's private tmp folders
        self.dir = Path(tempfile.mkdtemp(prefix="gpuwarden-mqtt-"))
        self.dir.chmod(0o755)
        self.port = _free_port()
        passwd = self.dir / "passwd"
        passwd.touch()
        for user, pw in PASSWORDS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True)
        shutil.copy(REPO / "examples" / "mosquitto" / "gpuwarden.acl", self.dir / "acl")
        (self.dir / "mosquitto.conf").write_text(
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {self.dir / 'acl'}\n"
            f"listener {self.port} 127.0.0.1\n"
            "persistence false\n"
        )
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam("mosquitto")
                for p in (self.dir, *self.dir.iterdir()):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
        for p in self.dir.iterdir():
            p.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "mosquitto.log"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.dir / "mosquitto.conf")],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A broker object, not started (the test starts it, maybe late)."""
    b = Broker()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def mosquitto(broker: Broker) -> Broker:
    broker.start()
    return broker


@dataclass
class Subscription:
    """What one MQTT user received on the topics it subscribed to."""

    user: str
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def subscribed(broker: Broker, user: str, *topics: str) -> AsyncIterator[Subscription]:
    """``user`` logged in to ``broker`` and subscribed (QoS 1) to ``topics`` until exit."""
    sub = Subscription(user)

    async def listen() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username=user, password=PASSWORDS[user]
        ) as client:
            for t in topics:
                await client.subscribe(t, qos=1)
            sub.ready.set()
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                sub.messages.append((str(m.topic), json.loads(payload)))

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(sub.ready.wait(), 10)
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task


class _Mailbox:
    def __init__(self) -> None:
        self.refuse = False
        self.received: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "451 4.3.0 mailbox busy, try again later"
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        self.received.append((list(envelope.rcpt_tos), message_from_bytes(raw)))
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    mailbox: _Mailbox

    @property
    def received(self) -> list[tuple[list[str], Message]]:
        return self.mailbox.received

    def refuse(self, on: bool) -> None:
        self.mailbox.refuse = on


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = _Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, mailbox)
    finally:
        controller.stop()
