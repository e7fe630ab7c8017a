"""Sends FIFO messages of several message groups with an official Python
Producer, then consumes them with an official SimpleConsumer of a FIFO
consumer group, failing every --fail-every-th message of each group once.

The producer interleaves the groups (message 0 of each group, then message 1
of each, …); bodies are "<group>:<index>". The consumer processes each
receive's messages of a group in order: a message whose index is
`fail_every - 1` modulo `fail_every` fails on its first delivery, and is
nacked (change_invisible_duration to 0 s) with the rest of its group's
messages in that receive, which must then come again, before anything later
of the group. Processed messages are acknowledged.

Output: {"ok", "processed": {group: [index…]} (in processing order),
"out_of_order": [{"group", "expected", "got"}], "failed": [body…],
"redelivered_attempts": {body: attempt} (of the failed messages when they
came again), "startup_ms", "shutdown_ms", "client_log"}.
"""

import time

import common
from rocketmq import FilterExpression, Message, Producer, SimpleConsumer


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--message-groups", type=int, default=3)
    parser.add_argument("--per-group", type=int, default=500)
    parser.add_argument("--fail-every", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to consume")
    return parser.parse_args()


def produce(arguments, groups):
    producer = Producer(common.client_configuration(arguments.endpoints), (arguments.topic,))
    producer.startup()
    try:
        for index in range(arguments.per_group):
            for group in groups:
                message = Message()
                message.topic = arguments.topic
                message.body = f"{group}:{index}".encode()
                message.message_group = group
                producer.send(message)
    finally:
        producer.shutdown()


def main(arguments, log):
    groups = [f"group-{number}" for number in range(arguments.message_groups)]
    started = time.monotonic()
    produce(arguments, groups)
    result = {
        "processed": {group: [] for group in groups},
        "out_of_order": [],
        "failed": [],
        "redelivered_attempts": {},
        "produce_ms": common.elapsed_ms(started),
    }
    consumer = SimpleConsumer(
        common.client_configuration(arguments.endpoints),
        arguments.group,
        {arguments.topic: FilterExpression("*")},
        5,
    )
    consumer.startup()
    failed = set()
    try:
        deadline = time.monotonic() + arguments.timeout
        done = lambda: all(
            len(result["processed"][group]) == arguments.per_group for group in groups
        )
        while not done():
            if time.monotonic() >= deadline:
                raise common.Failure(
                    f"not every message was processed within {arguments.timeout} s",
                    **result,
                )
            by_group = {}
            for message in consumer.receive(32, 20):
                by_group.setdefault(message.message_group, []).append(message)
            for group, messages in by_group.items():
                for position, message in enumerate(messages):
                    body = message.body.decode()
                    index = int(body.split(":")[1])
                    if body in failed and body not in result["redelivered_attempts"]:
                        result["redelivered_attempts"][body] = message.delivery_attempt
                    fails = (
                        index % arguments.fail_every == arguments.fail_every - 1
                        and body not in failed
                    )
                    if fails:
                        failed.add(body)
                        result["failed"].append(body)
                        for rest in messages[position:]:
                            consumer.change_invisible_duration(rest, 0)
                        break
                    processed = result["processed"].get(group)
                    if processed is None:
                        raise common.Failure(f"unknown message group {group}", **result)
                    expected = len(processed)
                    if index != expected:
                        result["out_of_order"].append(
                            {"group": group, "expected": expected, "got": index}
                        )
                    if index >= expected:
                        processed.append(index)
                    consumer.ack(message)
    finally:
        stopping = time.monotonic()
        consumer.shutdown()
        result["shutdown_ms"] = common.elapsed_ms(stopping)
    if result["out_of_order"]:
        raise common.Failure("a message group was delivered out of order", **result)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
