"""Starts an official Python Producer and sends one message every
--interval-ms for --seconds, recording each send's outcome, then shuts down.
Used by the failover drills: a region's node is killed while it sends.

Output: {"ok", "client_id", "startup_ms", "sends": [{"index", "at_ms" (since
the first send), "ok", "message_id" or "error", "send_ms"}], "shutdown_ms",
"client_log"}. A failed send is recorded, not fatal: the script fails only
if the producer cannot start.
"""

import time

import common
from rocketmq import Message, Producer


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--interval-ms", type=int, default=100)
    return parser.parse_args()


def main(arguments, log):
    producer = Producer(
        common.client_configuration(arguments.endpoints), (arguments.topic,)
    )
    started = time.monotonic()
    producer.startup()
    result = {
        "client_id": producer.client_id,
        "startup_ms": common.elapsed_ms(started),
        "sends": [],
    }
    try:
        if not producer._init_settings_event.wait(15):  # pylint: disable=protected-access
            raise common.Failure("no settings reply within 15 s", **result)
        first = time.monotonic()
        index = 0
        while time.monotonic() - first < arguments.seconds:
            message = Message()
            message.topic = arguments.topic
            message.tag = arguments.tag
            message.body = f"steady {index}".encode()
            entry = {"index": index, "at_ms": common.elapsed_ms(first)}
            sent_at = time.monotonic()
            try:
                receipt = producer.send(message)
                entry.update(ok=True, message_id=receipt.message_id)
            except Exception as error:  # pylint: disable=broad-except
                entry.update(ok=False, error=f"{type(error).__name__}: {error}")
            entry["send_ms"] = common.elapsed_ms(sent_at)
            result["sends"].append(entry)
            index += 1
            time.sleep(arguments.interval_ms / 1000)
    finally:
        stopping = time.monotonic()
        producer.shutdown()
        result["shutdown_ms"] = common.elapsed_ms(stopping)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
