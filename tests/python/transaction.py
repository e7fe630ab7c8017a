"""Starts an official Python Producer with a TransactionChecker, sends three
half messages (commits one, rolls one back, leaves one open for the server
to check back), and verifies with a SimpleConsumer which ones are delivered.

The half messages' bodies say what happens to them: "commit now" (committed
with Transaction.commit()), "rollback now" (Transaction.rollback()) and
"commit on check" (never resolved by the script: the server's
RecoverOrphanedTransactionCommand reaches the checker, which commits bodies
starting with "commit" and rolls back the rest). The consumer receives until
both committed messages arrived (acking them), then receives once more: the
rolled-back message must never come. The messages carry a tag unique to the
run, and the consumer takes only that tag.

Output: {"ok", "client_id", "settings_received", "tag", "sent": {"commit",
"rollback", "orphan"} each {"message_id", "transaction_id"}, "checked":
[{"message_id", "body"}], "received": [message…], "startup_ms",
"client_log": {"errors", "warnings"}}.
"""

import os
import threading
import time

import common
from rocketmq import (
    FilterExpression,
    Message,
    Producer,
    SimpleConsumer,
    TransactionChecker,
    TransactionResolution,
)


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to collect")
    parser.add_argument("--await-duration", type=int, default=5, help="long polling, s")
    return parser.parse_args()


class BodyChecker(TransactionChecker):
    """Commits half messages whose body starts with "commit"; records each ask."""

    def __init__(self):
        self.checked = []
        self._lock = threading.Lock()

    def check(self, message):
        body = bytes(message.body).decode("utf-8", "replace")
        with self._lock:
            self.checked.append({"message_id": message.message_id, "body": body})
        if body.startswith("commit"):
            return TransactionResolution.COMMIT
        return TransactionResolution.ROLLBACK

    def asked(self):
        with self._lock:
            return list(self.checked)


def half_message(topic, tag, body):
    message = Message()
    message.topic = topic
    message.body = body.encode()
    message.tag = tag
    return message


def main(arguments, log):
    checker = BodyChecker()
    producer = Producer(
        common.client_configuration(arguments.endpoints), (arguments.topic,), checker
    )
    started = time.monotonic()
    producer.startup()
    result = {
        "client_id": producer.client_id,
        "startup_ms": common.elapsed_ms(started),
        "sent": {},
        "received": [],
        # This run's messages only: the consumer filters on it.
        "tag": f"transaction-{os.getpid()}-{time.time_ns()}",
    }
    consumer = None
    try:
        settings_event = producer._init_settings_event  # pylint: disable=protected-access
        result["settings_received"] = settings_event.wait(15)
        if not result["settings_received"]:
            raise common.Failure("no settings reply within 15 s", **result)
        for name, body in (
            ("commit", "commit now"),
            ("rollback", "rollback now"),
            ("orphan", "commit on check"),
        ):
            transaction = producer.begin_transaction()
            receipt = producer.send(
                half_message(arguments.topic, result["tag"], body), transaction
            )
            if not receipt.transaction_id:
                raise common.Failure(f"no transaction id for {name}", **result)
            result["sent"][name] = {
                "message_id": receipt.message_id,
                "transaction_id": receipt.transaction_id,
            }
            if name == "commit":
                transaction.commit()
            elif name == "rollback":
                transaction.rollback()
        consumer = SimpleConsumer(
            common.client_configuration(arguments.endpoints),
            arguments.group,
            {arguments.topic: FilterExpression(result["tag"])},
            arguments.await_duration,
        )
        consumer.startup()
        wanted = {result["sent"][name]["message_id"] for name in ("commit", "orphan")}
        seen = set()
        deadline = time.monotonic() + arguments.timeout
        while not wanted <= seen:
            if time.monotonic() >= deadline:
                raise common.Failure(
                    f"received {sorted(seen)}, expected {sorted(wanted)} within "
                    f"{arguments.timeout} s",
                    checked=checker.asked(),
                    **result,
                )
            for message in consumer.receive(16, 30):
                result["received"].append(common.describe_message(message))
                seen.add(message.message_id)
                consumer.ack(message)
        for message in consumer.receive(16, 30):
            result["received"].append(common.describe_message(message))
        received = [message["message_id"] for message in result["received"]]
        if len(received) != len(set(received)) or set(received) != wanted:
            raise common.Failure(
                f"delivered {received}, expected {sorted(wanted)} once each",
                checked=checker.asked(),
                **result,
            )
    finally:
        if consumer is not None:
            consumer.shutdown()
        producer.shutdown()
    result["checked"] = checker.asked()
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
