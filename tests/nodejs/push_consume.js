'use strict';
// Starts an official Node.js PushConsumer whose listener fails on purpose,
// and reports what it saw.
//
//   node push_consume.js --endpoints 127.0.0.1:8181 --topic T --group G
//     --expect N [--tag X] [--poison-attempts N] [--timeout S]
//     [--deadline S] [--log-file F]
//
// The listener fails the first delivery of every message (it returns
// ConsumeResult.FAILURE: the client nacks it with ChangeInvisibleDuration),
// and every delivery of messages whose user property `poison` is `1` (it
// throws; the client's ConsumeTask turns that into FAILURE too). It returns
// once --expect messages without `poison` succeeded and every poison message
// was delivered --poison-attempts times, or fails after --timeout seconds
// (still shutting the consumer down). The consumer then shuts down: the
// client drops its process queues, waits for the receives still
// long-polling (up to the long-polling timeout of the settings reply) and
// for the cached messages' acks and nacks.
//
// Output: {"ok", "client_id", "startup_ms", "settings_received",
// "consumed": [{"message_id", "attempts": [attempt…], "succeeded_attempt"}]
// (normal messages, in order of first delivery), "succeeded": {message_id:
// attempt}, "poison": {message_id: [attempt…]}, "deliveries":
// [{"message_id", "attempt", "poison", "result", "at_ms"}] (every delivery in
// order, at_ms since startup), "retry_policy" (the client's, from the
// settings reply, or null), "shutdown_ms", "client_log",
// "settings_commands"}.

const common = require('./common');
const { ConsumeResult, PushConsumer } = require('rocketmq-client-nodejs');

const spec = {
  endpoints: { type: 'string' },
  topic: { type: 'string' },
  group: { type: 'string' },
  tag: { type: 'string', default: '*' },
  expect: { type: 'string' },
  'poison-attempts': { type: 'string', default: '0' },
  timeout: { type: 'string', default: '60' },
};

async function main(args, log, result) {
  const endpoints = common.required(args, 'endpoints');
  const topic = common.required(args, 'topic');
  const group = common.required(args, 'group');
  const expect = common.positiveNumber({ expect: common.required(args, 'expect') }, 'expect');
  const poisonAttempts = Number(args['poison-attempts']);
  if (!Number.isInteger(poisonAttempts) || poisonAttempts < 0) {
    throw new common.Failure(`--poison-attempts is not a non-negative integer: ${args['poison-attempts']}`);
  }
  const timeoutMs = common.positiveNumber(args, 'timeout') * 1000;

  // Filled as deliveries come, so that a run cut short by --deadline still
  // reports them.
  const consumed = new Map();
  Object.assign(result, { consumed: [], succeeded: {}, poison: {}, deliveries: [] });
  let started = common.now();
  let changed = () => {};
  const listener = {
    consume(message) {
      const id = message.messageId;
      const attempt = message.deliveryAttempt ?? null;
      const poisoned = message.properties.get('poison') === '1';
      const delivery = { message_id: id, attempt, poison: poisoned, at_ms: common.elapsedMs(started) };
      result.deliveries.push(delivery);
      try {
        if (poisoned) {
          (result.poison[id] ??= []).push(attempt);
          delivery.result = 'THROWN';
          throw new Error(`poison message ${id}, attempt ${attempt}`);
        }
        let entry = consumed.get(id);
        if (!entry) {
          entry = { message_id: id, attempts: [], succeeded_attempt: null };
          consumed.set(id, entry);
          result.consumed.push(entry);
        }
        entry.attempts.push(attempt);
        if (!(attempt > 1)) {
          delivery.result = 'FAILURE';
          return ConsumeResult.FAILURE;
        }
        entry.succeeded_attempt = attempt;
        result.succeeded[id] = attempt;
        delivery.result = 'SUCCESS';
        return ConsumeResult.SUCCESS;
      } finally {
        changed();
      }
    },
  };

  const consumer = new PushConsumer({
    endpoints,
    namespace: '',
    consumerGroup: group,
    subscriptions: new Map([ [ topic, args.tag ] ]),
    messageListener: listener,
    logger: log,
  });
  result.client_id = consumer.clientId;
  process.stderr.write(`starting push consumer ${consumer.clientId} (group ${group}) via ${endpoints}\n`);
  started = common.now();
  await consumer.startup();
  result.startup_ms = common.elapsedMs(started);
  result.settings_received = log.settings.length > 0;

  const done = () => {
    const poisoned = Object.values(result.poison);
    return Object.keys(result.succeeded).length >= expect
      && (poisonAttempts === 0
        || (poisoned.length > 0 && poisoned.every(attempts => attempts.length >= poisonAttempts)));
  };
  try {
    if (!result.settings_received) {
      throw new common.Failure('startup() returned but no settings command was logged');
    }
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new common.Failure(
          `within ${timeoutMs / 1000} s, ${Object.keys(result.succeeded).length} of ${expect} messages `
          + `succeeded and the poison message(s) were delivered ${JSON.stringify(result.poison)} `
          + `(expected ${poisonAttempts} attempts)`);
      }
      await new Promise(resolve => {
        const timer = setTimeout(resolve, left);
        changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      changed = () => {};
    }
    const policy = consumer.getRetryPolicy();
    result.retry_policy = policy && policy.toProtobuf ? policy.toProtobuf().toObject() : null;
  } finally {
    const stopping = common.now();
    process.stderr.write(`shutting down push consumer ${consumer.clientId}\n`);
    await consumer.shutdown();
    result.shutdown_ms = common.elapsedMs(stopping);
  }
  return result;
}

common.run(spec, main);
