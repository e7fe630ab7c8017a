"""Receipt-handle life cycle with the official Python SimpleConsumer: tag
filter, redelivery of an unacked message, change_invisible_duration, acks.

1. A Producer (--producer-endpoints) sends three messages with the tags
   PREFIX-redeliver, PREFIX-extend and PREFIX-filtered.
2. A SimpleConsumer (--consumer-endpoints) subscribed with
   "PREFIX-redeliver||PREFIX-extend" receives the first two, with an
   invisible duration of --invisible-duration seconds; the third must never
   be delivered.
3. change_invisible_duration(extend, --extended-duration) must give the
   message a new receipt handle.
4. The unacked "redeliver" message must come back once its invisible
   duration has passed, with delivery attempt 2 and a new receipt handle;
   the "extend" message must not (its invisibility was extended).
5. Acking "redeliver" with its first, stale handle must fail with
   INVALID_RECEIPT_HANDLE; acking with the new handle must succeed; so must
   acking "extend" with the handle change_invisible_duration returned.
6. A last receive must return nothing.

Output: what was observed at each step ("sent", "first_deliveries",
"change_invisible", "redelivery", "stale_ack", "acks", "final_receive",
"unexpected") and "problems": every expectation above that did not hold. The
script exits non-zero when "problems" is not empty or a step could not run.
"""

import time

import common
from rocketmq import FilterExpression, Message, Producer, SimpleConsumer
from rocketmq.grpc_protocol import Code


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--producer-endpoints", required=True, type=common.endpoints_argument
    )
    parser.add_argument(
        "--consumer-endpoints", required=True, type=common.endpoints_argument
    )
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--tag-prefix", default="lifecycle")
    parser.add_argument("--invisible-duration", type=int, default=4, help="seconds")
    parser.add_argument("--extended-duration", type=int, default=120, help="seconds")
    parser.add_argument("--await-duration", type=int, default=3, help="long polling, s")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds each step may take to see its messages",
    )
    return parser.parse_args()


def send_all(arguments, tags):
    producer = Producer(
        common.client_configuration(arguments.producer_endpoints), (arguments.topic,)
    )
    producer.startup()
    sent = {}
    try:
        for role, tag in tags.items():
            message = Message()
            message.topic = arguments.topic
            message.body = f"lifecycle message {role}".encode()
            message.tag = tag
            sent[role] = producer.send(message).message_id
    finally:
        producer.shutdown()
    return sent


def code_name(code):
    try:
        return Code.Name(code)
    except (ValueError, TypeError):
        return str(code)


def main(arguments, log):
    prefix = arguments.tag_prefix
    tags = {
        "redeliver": f"{prefix}-redeliver",
        "extend": f"{prefix}-extend",
        "filtered": f"{prefix}-filtered",
    }
    result = {"problems": [], "unexpected": []}
    problems = result["problems"]
    result["sent"] = send_all(arguments, tags)
    ids = {message_id: role for role, message_id in result["sent"].items()}

    consumer = SimpleConsumer(
        common.client_configuration(arguments.consumer_endpoints),
        arguments.group,
        {arguments.topic: FilterExpression(f"{tags['redeliver']}||{tags['extend']}")},
        arguments.await_duration,
    )
    consumer.startup()
    result["client_id"] = consumer.client_id

    def receive(step):
        try:
            return consumer.receive(16, arguments.invisible_duration)
        except Exception as error:
            raise common.Failure(
                f"{step}: receive raised {type(error).__name__}: {error}", **result
            ) from error

    def classify(message, step):
        """The role of a message of this run; anything else is unexpected."""
        role = ids.get(message.message_id)
        if role is None or role == "filtered":
            described = common.describe_message(message)
            described["step"] = step
            result["unexpected"].append(described)
            if role == "filtered":
                problems.append(
                    f"{step}: the message tagged {tags['filtered']} was delivered "
                    "despite the tag filter"
                )
        return role

    try:
        # 2. First deliveries.
        first = {}
        first_at = {}
        deadline = time.monotonic() + arguments.timeout
        while len(first) < 2:
            if time.monotonic() >= deadline:
                raise common.Failure(
                    f"first deliveries: got {sorted(first)} of redeliver and extend "
                    f"within {arguments.timeout} s",
                    **result,
                )
            for message in receive("first deliveries"):
                role = classify(message, "first deliveries")
                if role in first:
                    problems.append(
                        f"first deliveries: {role} came again before its invisible "
                        "duration passed"
                    )
                elif role in ("redeliver", "extend"):
                    first[role] = message
                    first_at[role] = time.monotonic()
        result["first_deliveries"] = {
            role: common.describe_message(message) for role, message in first.items()
        }
        for role, message in first.items():
            if message.delivery_attempt != 1:
                problems.append(
                    f"first delivery of {role} has delivery_attempt "
                    f"{message.delivery_attempt}, expected 1"
                )

        # 3. Extend the invisibility of "extend".
        extend = first["extend"]
        old_handle = extend.receipt_handle
        try:
            consumer.change_invisible_duration(extend, arguments.extended_duration)
        except Exception as error:
            raise common.Failure(
                f"change_invisible_duration raised {type(error).__name__}: {error}",
                **result,
            ) from error
        result["change_invisible"] = {
            "new_handle": bool(extend.receipt_handle),
            "handle_changed": extend.receipt_handle != old_handle,
        }
        if not extend.receipt_handle or extend.receipt_handle == old_handle:
            problems.append("change_invisible_duration did not return a new handle")

        # 4. "redeliver" comes back; "extend" does not.
        redelivered = None
        deadline = time.monotonic() + arguments.invisible_duration + arguments.timeout
        while redelivered is None:
            if time.monotonic() >= deadline:
                raise common.Failure(
                    "redelivery: the unacked message did not come back within "
                    f"{arguments.invisible_duration + arguments.timeout} s",
                    **result,
                )
            for message in receive("redelivery"):
                role = classify(message, "redelivery")
                if role == "redeliver" and redelivered is None:
                    redelivered = message
                    result["redelivery"] = common.describe_message(message)
                    result["redelivery"]["after_ms"] = common.elapsed_ms(
                        first_at["redeliver"]
                    )
                    result["redelivery"]["handle_changed"] = (
                        message.receipt_handle != first["redeliver"].receipt_handle
                    )
                elif role == "extend":
                    problems.append(
                        "redelivery: the message whose invisible duration was "
                        f"extended to {arguments.extended_duration} s came back"
                    )
                elif role == "redeliver":
                    problems.append("redelivery: the unacked message came twice")
        # One more poll, so that the original invisible duration of "extend"
        # has surely passed: it must stay invisible.
        result["extend_check_after_ms"] = None
        for message in receive("extended invisibility"):
            role = classify(message, "extended invisibility")
            if role in ("extend", "redeliver"):
                problems.append(
                    f"extended invisibility: {role} was delivered again "
                    f"(attempt {message.delivery_attempt})"
                )
        result["extend_check_after_ms"] = common.elapsed_ms(first_at["extend"])
        if redelivered.delivery_attempt != 2:
            problems.append(
                f"redelivery has delivery_attempt {redelivered.delivery_attempt}, "
                "expected 2"
            )
        if not result["redelivery"]["handle_changed"]:
            problems.append("redelivery reused the first receipt handle")
        if result["redelivery"]["after_ms"] < (arguments.invisible_duration - 1) * 1000:
            problems.append(
                f"redelivery came after {result['redelivery']['after_ms']} ms, "
                f"before the invisible duration of {arguments.invisible_duration} s"
            )

        # 5. Acks: the stale handle fails, the new ones succeed.
        try:
            consumer.ack(first["redeliver"])
            result["stale_ack"] = {"raised": False}
        except Exception as error:  # pylint: disable=broad-except
            result["stale_ack"] = {
                "raised": True,
                "exception": type(error).__name__,
                "code": code_name(getattr(error, "code", None)),
                "error": str(error),
            }
        if result["stale_ack"].get("code") != "INVALID_RECEIPT_HANDLE":
            problems.append(
                "ack with the stale receipt handle: expected INVALID_RECEIPT_HANDLE, "
                f"got {result['stale_ack']}"
            )
        result["acks"] = {}
        for role, message in (("redeliver", redelivered), ("extend", extend)):
            try:
                consumer.ack(message)
                result["acks"][role] = "OK"
            except Exception as error:  # pylint: disable=broad-except
                result["acks"][role] = f"{type(error).__name__}: {error}"
                problems.append(f"ack of {role} with its current handle: {error}")

        # 6. Nothing left.
        leftovers = receive("final receive")
        for message in leftovers:
            role = classify(message, "final receive")
            if role in ("redeliver", "extend"):
                problems.append(f"final receive: {role} was delivered after its ack")
        result["final_receive"] = len(leftovers)
    finally:
        stopping = time.monotonic()
        consumer.shutdown()
        result["shutdown_ms"] = common.elapsed_ms(stopping)

    if problems:
        raise common.Failure("; ".join(problems), **result)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
