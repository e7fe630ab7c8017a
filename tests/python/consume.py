"""Starts an official Python SimpleConsumer, receives until --expect distinct
messages arrived (acking each unless --no-ack), and shuts down.

With --expect 0 it makes --receives receives, each of which must return an
empty list (the client turns the server's MESSAGE_NOT_FOUND into []), and
reports how long each took: with nothing to deliver the server long-polls
for about --await-duration. With --then-empty, one more receive after the
expected messages must return nothing.

Output: {"ok", "client_id", "received": [message…], "duplicates": [message…],
"receives": [{"count", "elapsed_ms"}], "acked": [message_id…], "startup_ms",
"shutdown_ms", "client_log": {"errors", "warnings"}}; a message is
common.describe_message (id, tag, keys, properties, body, delivery attempt,
corrupted flag, …).

With --access-key/--secret-key (common.argument_parser) the client signs its
requests with them. A refused receive or ack fails the run with the client's
exception (status code and message) in "error"; a route query refused at
startup is only logged by the client (its receive then raises "failed to
fetch topic:… route."), and "error" quotes the client's WARNING and ERROR
lines, which carry the status.
"""

import time

import common
from rocketmq import FilterExpression, SimpleConsumer
from rocketmq.grpc_protocol import FilterType


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--filter", default="*", help="tag expression, e.g. 'a||b'")
    parser.add_argument("--sql", help="SQL92 filter expression instead of --filter")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to collect the expected messages",
    )
    parser.add_argument("--await-duration", type=int, default=5, help="long polling, s")
    parser.add_argument("--invisible-duration", type=int, default=30, help="seconds")
    parser.add_argument("--max-messages", type=int, default=16)
    parser.add_argument("--receives", type=int, default=1, help="with --expect 0")
    parser.add_argument("--no-ack", action="store_true")
    parser.add_argument("--then-empty", action="store_true")
    return parser.parse_args()


def main(arguments, log):
    consumer = SimpleConsumer(
        common.client_configuration(arguments.endpoints, arguments),
        arguments.group,
        {
            arguments.topic: FilterExpression(arguments.sql, FilterType.SQL)
            if arguments.sql
            else FilterExpression(arguments.filter)
        },
        arguments.await_duration,
        tls_enable=arguments.tls,
    )
    started = time.monotonic()
    consumer.startup()
    result = {
        "client_id": consumer.client_id,
        "startup_ms": common.elapsed_ms(started),
        "received": [],
        "duplicates": [],
        "receives": [],
        "acked": [],
    }
    seen = set()

    def receive():
        began = time.monotonic()
        try:
            messages = consumer.receive(
                arguments.max_messages, arguments.invisible_duration
            )
        except Exception as error:
            raise common.Failure(
                f"receive number {len(result['receives']) + 1} raised "
                f"{common.describe_error(error)}",
                **result,
            ) from error
        result["receives"].append(
            {"count": len(messages), "elapsed_ms": common.elapsed_ms(began)}
        )
        return messages

    try:
        deadline = time.monotonic() + arguments.timeout
        while len(seen) < arguments.expect:
            if time.monotonic() >= deadline:
                raise common.Failure(
                    f"received {len(seen)} of {arguments.expect} messages "
                    f"within {arguments.timeout} s",
                    **result,
                )
            for message in receive():
                described = common.describe_message(message)
                if message.message_id in seen:
                    result["duplicates"].append(described)
                else:
                    seen.add(message.message_id)
                    result["received"].append(described)
                if not arguments.no_ack:
                    try:
                        consumer.ack(message)
                    except Exception as error:
                        raise common.Failure(
                            f"ack of {message.message_id} raised "
                            f"{common.describe_error(error)}",
                            **result,
                        ) from error
                    result["acked"].append(message.message_id)
        if arguments.expect == 0:
            for _ in range(arguments.receives):
                messages = receive()
                if messages:
                    result["received"].extend(map(common.describe_message, messages))
                    raise common.Failure(
                        f"expected no message, got {len(messages)}", **result
                    )
        if arguments.then_empty:
            messages = receive()
            if messages:
                result["duplicates"].extend(map(common.describe_message, messages))
                raise common.Failure(
                    f"after the {arguments.expect} expected messages, "
                    f"got {len(messages)} more",
                    **result,
                )
    finally:
        stopping = time.monotonic()
        consumer.shutdown()
        result["shutdown_ms"] = common.elapsed_ms(stopping)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
