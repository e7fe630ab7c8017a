"""Starts an official Python Producer, sends one message per --sizes entry and
shuts down.

Bodies are random bytes of the given sizes (binary, not UTF-8). Before the
first send the script waits for the server's settings reply on the telemetry
stream, which is where the client takes `publishing.max_body_size` from (a
reply without it would make every send fail). Every message carries --tag,
the --key values and the --property pairs, plus the property `index`.

Output: {"ok", "client_id", "settings_received", "max_body_size",
"sent": [{"message_id", "client_message_id", "index", "size", "sha256",
"body_hex" (bodies up to 64 KiB), "tag", "keys", "properties", "send_ms"}],
"startup_ms", "shutdown_ms", "client_log": {"errors", "warnings"}}.
`message_id` is the id in the server's send result, `client_message_id` the
one the client generated.

With --access-key/--secret-key (common.argument_parser) the client signs its
requests with them. The client does not raise when the server refuses the
route query at startup (it logs the status); the script then fails at once
(the settings reply cannot come without a route) with the client's ERROR
lines, which carry the status code and message, in "error". A telemetry
stream the server ends with a gRPC error is logged at WARNING (also quoted
in "error"); a telemetry reply that carries only a refusal status, without
settings, the client ignores without a trace: the run then fails with "no
settings reply within --settings-timeout s".
"""

import logging
import os
import time

import common
from rocketmq import Message, Producer


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument(
        "--sizes",
        default="1024",
        help="comma-separated body sizes in bytes, one message each",
    )
    parser.add_argument("--tag")
    parser.add_argument("--message-group", help="send FIFO messages of this message group")
    parser.add_argument("--key", action="append", default=[], dest="keys")
    parser.add_argument(
        "--property",
        action="append",
        default=[],
        dest="properties",
        type=common.property_argument,
    )
    parser.add_argument(
        "--colliding-message-ids",
        action="store_true",
        help="generate the ids common.colliding_message_id gives, as a producer "
        "whose host, pid and clock coincide with another's would",
    )
    parser.add_argument(
        "--settings-timeout",
        type=float,
        default=15.0,
        help="seconds to wait for the server's settings reply",
    )
    arguments = parser.parse_args()
    try:
        arguments.sizes = [int(size) for size in arguments.sizes.split(",") if size]
    except ValueError:
        parser.error(f"--sizes is not a list of integers: {arguments.sizes!r}")
    if not arguments.sizes or min(arguments.sizes) <= 0:
        parser.error("--sizes needs at least one positive size")
    return arguments


def main(arguments, log):
    if arguments.colliding_message_ids:
        common.make_message_ids_collide()
    producer = Producer(
        common.client_configuration(arguments.endpoints, arguments),
        (arguments.topic,),
        tls_enable=arguments.tls,
    )
    started = time.monotonic()
    producer.startup()
    startup_ms = common.elapsed_ms(started)
    result = {"client_id": producer.client_id, "startup_ms": startup_ms, "sent": []}
    try:
        # A route query that failed during startup is only logged (client.py
        # __init_routes); without the route the client opens no telemetry
        # stream, so no settings reply can come: fail now rather than after
        # --settings-timeout. common.run adds the client's log lines (the
        # refusal's status code and message) to the error.
        if any(
            "route raise exception when client startup" in line
            for line in log.lines(logging.ERROR)
        ):
            result["settings_received"] = False
            raise common.Failure(
                f"the client could not fetch the route of {arguments.topic} at startup",
                **result,
            )
        # Startup does not wait for the settings reply; the client sets this
        # event when one arrives (with status OK) and applies it.
        settings_event = producer._init_settings_event  # pylint: disable=protected-access
        result["settings_received"] = settings_event.wait(arguments.settings_timeout)
        # What the client took from the reply (name-mangled private field;
        # read only, for the report).
        result["max_body_size"] = getattr(producer, "_Producer__max_body_size", None)
        if not result["settings_received"]:
            raise common.Failure(
                f"no settings reply within {arguments.settings_timeout} s", **result
            )
        for index, size in enumerate(arguments.sizes):
            body = os.urandom(size)
            message = Message()
            message.topic = arguments.topic
            message.body = body
            if arguments.tag:
                message.tag = arguments.tag
            if arguments.message_group:
                message.message_group = arguments.message_group
            for key in arguments.keys:
                # The setter adds one key per assignment.
                message.keys = key
            for key, value in arguments.properties:
                message.add_property(key, value)
            message.add_property("index", str(index))
            sent_at = time.monotonic()
            try:
                receipt = producer.send(message)
            except Exception as error:
                raise common.Failure(
                    f"send of message {index} ({size} bytes) failed: "
                    f"{common.describe_error(error)}",
                    **result,
                ) from error
            entry = {
                "index": index,
                "message_id": receipt.message_id,
                "client_message_id": message.message_id,
                "tag": arguments.tag,
                "keys": sorted(arguments.keys),
                "properties": dict(message.properties),
                "send_ms": common.elapsed_ms(sent_at),
            }
            entry.update(common.describe_body(body))
            result["sent"].append(entry)
    finally:
        stopping = time.monotonic()
        producer.shutdown()
        result["shutdown_ms"] = common.elapsed_ms(stopping)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
