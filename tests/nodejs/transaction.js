'use strict';
// Starts an official Node.js Producer with a transaction checker, sends three
// half messages (commits one, rolls one back, leaves one open for the server
// to check back), and verifies with a SimpleConsumer which ones are delivered.
//
//   node transaction.js --endpoints 127.0.0.1:8081 --topic T --group G
//     [--tag X] [--timeout S] [--await-duration S] [--deadline S] [--log-file F]
//
// Each half message is sent in its own transaction (`producer.beginTransaction()`,
// `producer.send(message, transaction)`); its body says what happens to it:
// "commit now" (`transaction.commit()` right after the send), "rollback now"
// (`transaction.rollback()`) and "commit when checked" (never resolved by the
// script: the server's RecoverOrphanedTransactionCommand on the producer's
// telemetry stream reaches the checker, and the client sends EndTransaction
// with source SOURCE_SERVER_CHECK). The checker commits bodies starting with
// "commit", rolls back those starting with "rollback" and leaves anything
// else unknown; it records every message it was asked about, with when.
//
// The consumer (its own group) receives until both committed messages arrived
// (acking them), then long-polls once more: the rolled-back message must never
// come, nor anything twice. The producer stays up meanwhile, so the check-back
// and its EndTransaction happen while the script runs.
//
// Output: {"ok", "client_id", "consumer_client_id", "startup_ms",
// "settings_received", "sent": {"commit", "rollback", "orphan"} each
// {"message_id", "transaction_id", "body", "offset", "queue_id", "send_ms",
// "end_ms" (commit/rollback only)}, "checked": [{"message_id", "body",
// "resolution", "at_ms"}], "received": [message… with "at_ms"], "acked",
// "receives": [{"count", "elapsed_ms"}], "sent_at_ms", "shutdown_ms",
// "client_log", "settings_commands"}. `at_ms` values are ms since the first
// send.

const common = require('./common');
const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const spec = {
  endpoints: { type: 'string' },
  topic: { type: 'string' },
  group: { type: 'string' },
  tag: { type: 'string', default: `transaction-${process.pid}-${Date.now()}` },
  timeout: { type: 'string', default: '60' },
  'await-duration': { type: 'string', default: '3' },
};

// What the script does with each half message, in sending order.
const HALF_MESSAGES = [
  { name: 'commit', body: 'commit now', end: 'commit' },
  { name: 'rollback', body: 'rollback now', end: 'rollback' },
  { name: 'orphan', body: 'commit when checked', end: null },
];

const RESOLUTION_NAMES = Object.fromEntries(Object.entries(TransactionResolution).map(([ name, value ]) => [ value, name ]));

async function main(args, log, result) {
  const endpoints = common.required(args, 'endpoints');
  const topic = common.required(args, 'topic');
  const group = common.required(args, 'group');
  const timeoutMs = common.positiveNumber(args, 'timeout') * 1000;
  const awaitMs = common.positiveNumber(args, 'await-duration') * 1000;

  let firstSend = null;
  const sinceFirstSend = () => (firstSend === null ? null : common.elapsedMs(firstSend));
  result.checked = [];
  const checker = {
    async check(messageView) {
      const body = Buffer.from(messageView.body).toString('utf8');
      let resolution = TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED;
      if (body.startsWith('commit')) resolution = TransactionResolution.COMMIT;
      else if (body.startsWith('rollback')) resolution = TransactionResolution.ROLLBACK;
      result.checked.push({
        message_id: messageView.messageId,
        body,
        resolution: RESOLUTION_NAMES[resolution],
        at_ms: sinceFirstSend(),
      });
      process.stderr.write(`checker asked about ${messageView.messageId} (${body}): ${RESOLUTION_NAMES[resolution]}\n`);
      return resolution;
    },
  };

  const producer = new Producer({ endpoints, namespace: '', topics: [ topic ], checker, logger: log });
  Object.assign(result, { client_id: producer.clientId, sent: {}, received: [], acked: [], receives: [] });
  const started = common.now();
  process.stderr.write(`starting transaction producer ${producer.clientId} via ${endpoints}\n`);
  await producer.startup();
  result.startup_ms = common.elapsedMs(started);
  let consumer = null;
  try {
    result.settings_received = log.settings.length > 0;
    if (!result.settings_received) {
      throw new common.Failure('startup() returned but no settings command was logged');
    }
    consumer = new SimpleConsumer({
      endpoints,
      namespace: '',
      consumerGroup: group,
      subscriptions: new Map([ [ topic, args.tag ] ]),
      awaitDuration: awaitMs,
      logger: log,
    });
    result.consumer_client_id = consumer.clientId;
    process.stderr.write(`starting simple consumer ${consumer.clientId} (group ${group}) via ${endpoints}\n`);
    await consumer.startup();

    // Commit and rollback right after their sends: the first check-back of
    // an open transaction comes about a second after its send.
    firstSend = common.now();
    for (const { name, body, end } of HALF_MESSAGES) {
      const transaction = producer.beginTransaction();
      const message = { topic, tag: args.tag, body: Buffer.from(body), keys: [ name ] };
      const sentAt = common.now();
      let receipt;
      try {
        receipt = await producer.send(message, transaction);
      } catch (error) {
        throw new common.Failure(`send of the half message "${body}" failed: ${common.errorText(error)}`);
      }
      if (!receipt || !receipt.messageId || !receipt.transactionId) {
        throw new common.Failure(`send of the half message "${body}" returned no message or transaction id`);
      }
      const sent = {
        message_id: receipt.messageId,
        transaction_id: receipt.transactionId,
        body,
        offset: receipt.offset,
        queue_id: receipt.messageQueue.queueId,
        send_ms: common.elapsedMs(sentAt),
      };
      result.sent[name] = sent;
      if (end) {
        const endAt = common.now();
        try {
          await (end === 'commit' ? transaction.commit() : transaction.rollback());
        } catch (error) {
          throw new common.Failure(`${end} of ${receipt.messageId} failed: ${common.errorText(error)}`);
        }
        sent.end_ms = common.elapsedMs(endAt);
      }
    }
    result.sent_at_ms = sinceFirstSend();

    const receive = async () => {
      const began = common.now();
      let messages;
      try {
        messages = await consumer.receive(16, 30000);
      } catch (error) {
        throw new common.Failure(`receive number ${result.receives.length + 1} failed: ${common.errorText(error)}`);
      }
      result.receives.push({ count: messages.length, elapsed_ms: common.elapsedMs(began) });
      for (const message of messages) {
        result.received.push({ ...common.describeMessage(message), at_ms: sinceFirstSend() });
      }
      return messages;
    };
    const wanted = new Set([ result.sent.commit.message_id, result.sent.orphan.message_id ]);
    const seen = new Set();
    const deadline = Date.now() + timeoutMs;
    while (![ ...wanted ].every(id => seen.has(id))) {
      if (Date.now() >= deadline) {
        throw new common.Failure(`received ${JSON.stringify([ ...seen ])}, expected ${JSON.stringify([ ...wanted ])} within ${timeoutMs / 1000} s`);
      }
      for (const message of await receive()) {
        seen.add(message.messageId);
        try {
          await consumer.ack(message);
        } catch (error) {
          throw new common.Failure(`ack of ${message.messageId} failed: ${common.errorText(error)}`);
        }
        result.acked.push(message.messageId);
      }
    }
    // The rolled-back message, or a second copy of anything, would come now.
    await receive();
    const received = result.received.map(message => message.message_id);
    if (received.length !== new Set(received).size || received.some(id => !wanted.has(id))) {
      throw new common.Failure(`delivered ${JSON.stringify(received)}, expected ${JSON.stringify([ ...wanted ])} once each`);
    }
  } finally {
    const stopping = common.now();
    if (consumer) await consumer.shutdown();
    await producer.shutdown();
    result.shutdown_ms = common.elapsedMs(stopping);
  }
  return result;
}

common.run(spec, main);
