"""``gpuwarden alerts``: follow one's own alerts from a terminal.

Subscribes to ``gpuwarden/alerts/<me>/#`` on the site's MQTT broker (the broker's ACL lets
each researcher read only their own topic) and prints one friendly paragraph per alert, or
with ``--json`` each payload as one JSON line. An alert delivered twice (at-least-once
delivery) is printed once. Needs ``gpuwarden[alerts]`` (``aiomqtt``).

The password is read from ``--password-file`` or the ``GPUWARDEN_MQTT_PASSWORD`` variable,
never from the command line (other users can read it there).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from gpuwarden.common.address import split_host_port
from gpuwarden.common.alert import Alert, check_user, summary_line
from gpuwarden.common.argtypes import address_arg, checked, int_arg

PASSWORD_ENV = "GPUWARDEN_MQTT_PASSWORD"  # noqa: S105 (the variable's name, not a password)


def add_alerts_parser(sub: Any) -> None:
    al: argparse.ArgumentParser = sub.add_parser(
        "alerts",
        help="follow your own GPU alerts (MQTT)",
        description="Print your gpuwarden alerts as they arrive: what was found on which "
        "job, the numbers, what happens next and when. Ctrl-C stops.",
    )
    al.add_argument(
        "--broker",
        type=address_arg,
        default=os.environ.get("GPUWARDEN_MQTT_BROKER", "127.0.0.1:1883"),
        metavar="HOST:PORT",
        help="the site's MQTT broker (default $GPUWARDEN_MQTT_BROKER or 127.0.0.1:1883)",
    )
    al.add_argument(
        "--user",
        type=checked(check_user),
        default=None,
        help="whose alerts, and the MQTT user name (default: you)",
    )
    al.add_argument(
        "--password-file", type=Path, help=f"file holding your MQTT password (or ${PASSWORD_ENV})"
    )
    al.add_argument("--tls-ca", type=Path, help="CA of the broker's certificate (TLS on)")
    al.add_argument("--topic-prefix", default="gpuwarden/alerts", help=argparse.SUPPRESS)
    al.add_argument("--count", type=int_arg(1), help="stop after N alerts")
    al.add_argument("--json", action="store_true", help="one JSON payload per line")
    al.set_defaults(func=alerts_main)


def alerts_main(args: argparse.Namespace) -> int:
    try:
        user = args.user or check_user(getpass.getuser())
    except ValueError as exc:
        print(f"gpuwarden alerts: your login name: {exc}; give --user", file=sys.stderr)
        return 2
    password = os.environ.get(PASSWORD_ENV)
    if args.password_file is not None:
        password = args.password_file.read_text().strip()
    try:
        return asyncio.run(_follow(args, user, password))
    except KeyboardInterrupt:
        return 0


async def _follow(args: argparse.Namespace, user: str, password: str | None) -> int:
    import aiomqtt

    host, port = split_host_port(args.broker)
    tls = ssl.create_default_context(cafile=str(args.tls_ca)) if args.tls_ca else None
    topic = f"{args.topic_prefix.rstrip('/')}/{user}/#"
    seen: set[str] = set()
    shown = 0
    try:
        async with aiomqtt.Client(
            host.strip("[]"), port, username=user, password=password, tls_context=tls
        ) as client:
            await client.subscribe(topic, qos=1)
            print(f"following {topic} on {args.broker} (Ctrl-C stops)", file=sys.stderr)
            async for message in client.messages:
                line = _render(message.payload, args.json, seen)
                if line is None:
                    continue
                print(line, flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    return 0
    except aiomqtt.MqttError as exc:
        print(f"gpuwarden alerts: broker {args.broker}: {exc}", file=sys.stderr)
        return 1
    return 0


def _render(payload: object, as_json: bool, seen: set[str]) -> str | None:
    """The text for one message; None for a repeat. A payload that is not an alert is
    shown as such, not dropped."""
    raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
    try:
        doc = json.loads(raw)
        alert = Alert.from_json(doc)
    except ValueError as exc:
        return f"(a message that is not a gpuwarden alert: {exc})"
    if alert.alert_id in seen:
        return None
    seen.add(alert.alert_id)
    return json.dumps(doc, sort_keys=True) if as_json else summary_line(alert) + "\n"
