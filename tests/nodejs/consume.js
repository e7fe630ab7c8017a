'use strict';
// Starts an official Node.js SimpleConsumer, receives until --expect distinct
// messages arrived (acking each), optionally checks that nothing more comes,
// and shuts down.
//
//   node consume.js --endpoints 127.0.0.1:8181 --topic T --group G --expect N
//     [--filter 'a||b'] [--timeout S] [--await-duration S]
//     [--invisible-duration S] [--max-messages N] [--then-empty]
//     [--access-key AK --secret-key SK] [--deadline S] [--log-file F]
//
// startup() resolves only once the server's settings reply arrived. Every
// received message is checked by the client against its body digest; the
// output says whether the client flagged it `corrupted`.
//
// Output: {"ok", "client_id", "startup_ms", "settings_received", "received":
// [{"message_id", "topic", "tag", "keys", "properties", "delivery_attempt",
// "corrupted", "has_receipt_handle", "size", "sha256", "body_hex", ...}],
// "duplicates", "receives": [{"count", "elapsed_ms"}], "acked",
// "shutdown_ms", "client_log", "settings_commands"}.
//
// With --access-key/--secret-key the client signs its requests with them (its
// `sessionCredentials` option). A refusal fails the run with the client's
// error in "error" (see produce.js): a refused startup, receive or ack.

const common = require('./common');
const { SimpleConsumer } = require('rocketmq-client-nodejs');

const spec = {
  ...common.credentialOptions,
  endpoints: { type: 'string' },
  topic: { type: 'string' },
  group: { type: 'string' },
  filter: { type: 'string', default: '*' },
  expect: { type: 'string' },
  timeout: { type: 'string', default: '60' },
  'await-duration': { type: 'string', default: '5' },
  'invisible-duration': { type: 'string', default: '30' },
  'max-messages': { type: 'string', default: '16' },
  'then-empty': { type: 'boolean', default: false },
};

async function main(args, log, result) {
  const endpoints = common.required(args, 'endpoints');
  const topic = common.required(args, 'topic');
  const group = common.required(args, 'group');
  const expect = common.positiveNumber({ expect: common.required(args, 'expect') }, 'expect');
  const timeoutMs = common.positiveNumber(args, 'timeout') * 1000;
  const awaitMs = common.positiveNumber(args, 'await-duration') * 1000;
  const invisibleMs = common.positiveNumber(args, 'invisible-duration') * 1000;
  const maxMessages = common.positiveNumber(args, 'max-messages');

  const consumer = new SimpleConsumer({
    endpoints,
    namespace: '',
    consumerGroup: group,
    subscriptions: new Map([ [ topic, args.filter ] ]),
    awaitDuration: awaitMs,
    logger: log,
    sessionCredentials: common.sessionCredentials(args),
    sslEnabled: args.tls,
  });
  Object.assign(result, {
    client_id: consumer.clientId,
    received: [],
    duplicates: [],
    receives: [],
    acked: [],
  });
  const started = common.now();
  process.stderr.write(`starting simple consumer ${consumer.clientId} (group ${group}) via ${endpoints}\n`);
  await consumer.startup();
  result.startup_ms = common.elapsedMs(started);
  result.settings_received = log.settings.length > 0;

  const receive = async () => {
    const began = common.now();
    let messages;
    try {
      messages = await consumer.receive(maxMessages, invisibleMs);
    } catch (error) {
      throw new common.Failure(`receive number ${result.receives.length + 1} failed: ${common.errorText(error)}`);
    }
    result.receives.push({ count: messages.length, elapsed_ms: common.elapsedMs(began) });
    return messages;
  };

  try {
    if (!result.settings_received) {
      throw new common.Failure('startup() returned but no settings command was logged');
    }
    const seen = new Set();
    const deadline = Date.now() + timeoutMs;
    while (seen.size < expect) {
      if (Date.now() >= deadline) {
        throw new common.Failure(`received ${seen.size} of ${expect} messages within ${timeoutMs / 1000} s`);
      }
      for (const message of await receive()) {
        const described = common.describeMessage(message);
        if (seen.has(message.messageId)) {
          result.duplicates.push(described);
        } else {
          seen.add(message.messageId);
          result.received.push(described);
        }
        try {
          await consumer.ack(message);
        } catch (error) {
          throw new common.Failure(`ack of ${message.messageId} failed: ${common.errorText(error)}`);
        }
        result.acked.push(message.messageId);
      }
    }
    if (args['then-empty']) {
      const more = await receive();
      if (more.length) {
        result.duplicates.push(...more.map(common.describeMessage));
        throw new common.Failure(`after the ${expect} expected messages, got ${more.length} more`);
      }
    }
  } finally {
    const stopping = common.now();
    await consumer.shutdown();
    result.shutdown_ms = common.elapsedMs(stopping);
  }
  return result;
}

common.run(spec, main);
