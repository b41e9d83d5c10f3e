"""Pub/sub commands: SUBSCRIBE PSUBSCRIBE SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH SPUBLISH
and PUBSUB (``server/pubsub.py`` holds the subscriptions and delivers).

A RESP2 connection with a subscription is in subscribed mode: only the commands flagged
``subscribed`` (these, PING, QUIT, RESET) run until it unsubscribes from everything. A RESP3
connection keeps running any command; its messages arrive as push frames in between.
Confirmations are one frame per channel, as in Redis (push frames in RESP3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engramdb.protocol.resp import Encoded, Push, encode_reply
from engramdb.server.commands import Reply, command
from engramdb.server.handlers.subcommands import Container

if TYPE_CHECKING:
    from engramdb.server.connection import Connection
    from engramdb.server.pubsub import Kind


def _frames(conn: Connection, replies: list[Push]) -> Encoded:
    return Encoded(b"".join(encode_reply(reply, conn.resp3) for reply in replies))


def _subscribe(conn: Connection, kind: Kind, names: list[bytes]) -> Encoded:
    if conn.multi is not None:
        raise Reply(f"ERR Command not allowed inside a transaction ('{kind}' subscriptions)")
    try:
        replies = conn.server.pubsub.subscribe(conn, kind, names)
    except OverflowError as e:
        raise Reply(str(e)) from None
    return _frames(conn, replies)


def _unsubscribe(conn: Connection, kind: Kind, names: list[bytes]) -> Encoded:
    replies = conn.server.pubsub.unsubscribe(conn, kind, names)
    return _frames(conn, replies)


@command("subscribe", -2, "pubsub", "subscribed", keys=(0, 0, 0))
def subscribe(conn: Connection, args: list[bytes]) -> Any:
    """Listen for messages published to the given channels."""
    return _subscribe(conn, "channel", args)


@command("psubscribe", -2, "pubsub", "subscribed", keys=(0, 0, 0))
def psubscribe(conn: Connection, args: list[bytes]) -> Any:
    """Listen for messages published to channels matching the given patterns."""
    return _subscribe(conn, "pattern", args)


@command("ssubscribe", -2, "pubsub", "subscribed", keys=(1, -1, 1))
def ssubscribe(conn: Connection, args: list[bytes]) -> Any:
    """Listen for messages published to the given shard channels."""
    return _subscribe(conn, "shard", args)


@command("unsubscribe", -1, "pubsub", "subscribed", keys=(0, 0, 0))
def unsubscribe(conn: Connection, args: list[bytes]) -> Any:
    """Stop listening for messages posted to the given channels (all when none given)."""
    return _unsubscribe(conn, "channel", args)


@command("punsubscribe", -1, "pubsub", "subscribed", keys=(0, 0, 0))
def punsubscribe(conn: Connection, args: list[bytes]) -> Any:
    """Stop listening for messages posted to channels matching the given patterns."""
    return _unsubscribe(conn, "pattern", args)


@command("sunsubscribe", -1, "pubsub", "subscribed", keys=(1, -1, 1))
def sunsubscribe(conn: Connection, args: list[bytes]) -> Any:
    """Stop listening for messages posted to the given shard channels."""
    return _unsubscribe(conn, "shard", args)


@command("publish", 3, "pubsub", "fast", keys=(0, 0, 0))
def publish(conn: Connection, args: list[bytes]) -> Any:
    """Post a message to a channel; returns how many clients received it."""
    server = conn.server
    if server.bus is not None:
        server.bus.publish(args[0], args[1])
    return server.pubsub.publish(args[0], args[1])


@command("spublish", 3, "pubsub", "fast", keys=(1, 1, 1))
def spublish(conn: Connection, args: list[bytes]) -> Any:
    """Post a message to a shard channel; returns how many clients received it."""
    server = conn.server
    if server.bus is not None:
        server.bus.publish(args[0], args[1], shard=True)
    return server.pubsub.spublish(args[0], args[1])


pubsub_ = Container("pubsub")


@command("pubsub", -2, "pubsub", keys=(0, 0, 0), metric=pubsub_.metric)
def pubsub(conn: Connection, args: list[bytes]) -> Any:
    """A container for Pub/Sub commands."""
    return pubsub_.dispatch(conn, args)


@pubsub_("channels", -2, "pubsub", summary="Returns the active channels.")
def pubsub_channels(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 1:
        raise Reply("ERR wrong number of arguments for 'pubsub|channels' command")
    return conn.server.pubsub.active("channel", args[0] if args else None)


@pubsub_("shardchannels", -2, "pubsub", summary="Returns the active shard channels.")
def pubsub_shardchannels(conn: Connection, args: list[bytes]) -> Any:
    if len(args) > 1:
        raise Reply("ERR wrong number of arguments for 'pubsub|shardchannels' command")
    return conn.server.pubsub.active("shard", args[0] if args else None)


@pubsub_("numsub", -2, "pubsub", summary="Returns a count of subscribers to channels.")
def pubsub_numsub(conn: Connection, args: list[bytes]) -> Any:
    hub = conn.server.pubsub
    out: list[Any] = []
    for name in args:
        out += [name, hub.numsub("channel", name)]
    return out


@pubsub_("shardnumsub", -2, "pubsub", summary="Returns the count of subscribers of shard channels.")
def pubsub_shardnumsub(conn: Connection, args: list[bytes]) -> Any:
    hub = conn.server.pubsub
    out: list[Any] = []
    for name in args:
        out += [name, hub.numsub("shard", name)]
    return out


@pubsub_("numpat", 2, "pubsub", summary="Returns a count of unique pattern subscriptions.")
def pubsub_numpat(conn: Connection, args: list[bytes]) -> Any:
    return len(conn.server.pubsub.patterns)
