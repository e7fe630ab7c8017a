"""Starts an official Python PushConsumer whose listener fails on purpose,
and reports what it saw.

The listener fails the first delivery of every message (FAILURE: the client
nacks it with ChangeInvisibleDuration and the group's back-off; not with
--succeed-first), and every delivery of messages whose user property
`poison` is set. With --work-ms it takes that long over each delivery (a
listener slower than the group's invisible time, which the server must
renew). It returns once
--expect messages without `poison` succeeded and every poison message was
delivered --poison-attempts times, or fails after --timeout.

Output: {"ok", "succeeded": {message_id: attempt}, "order": [message_id…]
(successes in processing order), "attempts": {message_id: [attempt…]},
"poison": {message_id: [attempt…]}, "startup_ms", "shutdown_ms",
"client_log"}. In a FIFO group the client retries a failed message itself
(same delivery attempt each time) and then forwards it to the dead-letter
topic, so a poison message's list then has one entry per local try.
"""

import threading
import time

import common
from rocketmq import ConsumeResult, FilterExpression, MessageListener, PushConsumer


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--tag", default="*")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--poison-attempts", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--succeed-first", action="store_true")
    parser.add_argument("--work-ms", type=int, default=0)
    return parser.parse_args()


class Listener(MessageListener):
    def __init__(self, arguments):
        self.fail_first = not arguments.succeed_first
        self.work_s = arguments.work_ms / 1000.0
        self.lock = threading.Lock()
        self.attempts = {}
        self.poison = {}
        self.succeeded = {}
        self.order = []
        self.changed = threading.Condition(self.lock)

    def consume(self, message):
        if self.work_s:
            time.sleep(self.work_s)
        with self.lock:
            attempt = message.delivery_attempt
            if message.properties.get("poison"):
                self.poison.setdefault(message.message_id, []).append(attempt)
                self.changed.notify_all()
                return ConsumeResult.FAILURE
            self.attempts.setdefault(message.message_id, []).append(attempt)
            if attempt <= 1 and self.fail_first:
                return ConsumeResult.FAILURE
            self.succeeded[message.message_id] = attempt
            self.order.append(message.message_id)
            self.changed.notify_all()
            return ConsumeResult.SUCCESS


def main(arguments, log):
    listener = Listener(arguments)
    consumer = PushConsumer(
        common.client_configuration(arguments.endpoints),
        arguments.group,
        listener,
        {arguments.topic: FilterExpression(arguments.tag)},
    )
    started = time.monotonic()
    consumer.startup()
    result = {"startup_ms": common.elapsed_ms(started)}

    def done():
        poisoned = all(
            len(attempts) >= arguments.poison_attempts
            for attempts in listener.poison.values()
        )
        return (
            len(listener.succeeded) >= arguments.expect
            and poisoned
            and (arguments.poison_attempts == 0 or listener.poison)
        )

    try:
        deadline = time.monotonic() + arguments.timeout
        with listener.lock:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise common.Failure(
                        "the listener did not see everything in time",
                        succeeded=listener.succeeded,
                        attempts=listener.attempts,
                        poison=listener.poison,
                        **result,
                    )
                listener.changed.wait(left)
            result.update(
                succeeded=dict(listener.succeeded),
                order=list(listener.order),
                attempts=dict(listener.attempts),
                poison=dict(listener.poison),
            )
    finally:
        stopping = time.monotonic()
        consumer.shutdown()
        result["shutdown_ms"] = common.elapsed_ms(stopping)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
