"""The ``mqtt`` notifier: each alert to ``<topic_prefix>/<user>/<job_id>`` with QoS 1.

The payload is the versioned alert JSON (:mod:`gpuwarden.common.alert`). The broker's ACL
lets each researcher read only their own topic (``pattern read gpuwarden/alerts/%u/#``;
an example broker config is in ``examples/mosquitto/``). Delivery counts when the broker
acknowledged the publish (PUBACK); queueing, retry and dedup are the
:class:`~gpuwarden.collector.outputs.delivery.DurableNotifier`'s. Needs ``gpuwarden[alerts]``
(``aiomqtt``).

```toml
[notifiers.mqtt]
host = "mqtt.example.org"
port = 8883
username = "gpuwarden-collector"
password_file = "/etc/gpuwarden/mqtt-password"
tls_ca = "/etc/gpuwarden/mqtt-ca.pem"
```
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuwarden.collector.outputs.delivery import DurableNotifier, durable_notifier
from gpuwarden.collector.outputs.notify import NotifierContext
from gpuwarden.common.alert import Alert, check_user
from gpuwarden.common.config import duration_field, ranged

_NOT_IN_LEVEL = re.compile(r"[/+#\x00]")


@dataclass(frozen=True, slots=True)
class MqttOptions:
    host: str = "127.0.0.1"
    port: int = ranged(1883, minimum=1, maximum=65535)
    username: str = ""
    password: str = ""
    password_file: str = ""  # a file holding the password (kept out of the config)
    tls_ca: str = ""  # CA of the broker's certificate: TLS on when set
    topic_prefix: str = "gpuwarden/alerts"
    timeout: float = duration_field(10.0, minimum=0.1)
    client_id: str = ""

    def __post_init__(self) -> None:
        if not self.topic_prefix or re.search(r"[+#\x00]", self.topic_prefix):
            raise ValueError(f"topic_prefix: {self.topic_prefix!r} may not hold + # or NUL")
        if self.password and self.password_file:
            raise ValueError("password and password_file: give one of them")


def alert_topic(prefix: str, alert: Alert) -> str:
    """``prefix/<user>/<job_id>``; ValueError when the user cannot be a topic level."""
    check_user(alert.user)
    job = _NOT_IN_LEVEL.sub("_", alert.job_id) or "_"
    return f"{prefix.rstrip('/')}/{alert.user}/{job}"


class MqttTransport:
    def __init__(self, opts: MqttOptions, state_dir: Path) -> None:
        self.opts = opts
        self.password: str | None = opts.password or None
        if opts.password_file:
            path = Path(opts.password_file)
            path = path if path.is_absolute() else state_dir / path
            self.password = path.read_text().strip()
        self.tls: ssl.SSLContext | None = None
        if opts.tls_ca:
            self.tls = ssl.create_default_context(cafile=opts.tls_ca)

    def check(self, alert: Alert) -> None:
        alert_topic(self.opts.topic_prefix, alert)

    def deliver(self, alert: Alert) -> None:
        asyncio.run(self._publish(alert))

    async def _publish(self, alert: Alert) -> None:
        import aiomqtt

        o = self.opts
        payload = json.dumps(alert.to_json(), sort_keys=True).encode()
        async with aiomqtt.Client(
            o.host,
            o.port,
            username=o.username or None,
            password=self.password,
            identifier=o.client_id or None,
            tls_context=self.tls,
            timeout=o.timeout,
        ) as client:
            await client.publish(
                alert_topic(o.topic_prefix, alert), payload, qos=1, timeout=o.timeout
            )

    def close(self) -> None:
        pass


def mqtt_notifier(ctx: NotifierContext, options: Mapping[str, Any]) -> DurableNotifier:
    return durable_notifier(ctx.name, ctx.state_dir, options, MqttOptions, MqttTransport)
