'use strict';
// Starts an official Node.js Producer and sends one message every
// --interval-ms for --seconds, recording each send's outcome, then shuts
// down. Used by the failover drills: a region's node is killed while it sends.
//
//   node steady_produce.js --endpoints 127.0.0.1:8081 --topic T --tag X
//     [--seconds 8] [--interval-ms 100] [--deadline S] [--log-file F]
//
// Output: {"ok", "client_id", "startup_ms", "sends": [{"index", "at_ms"
// (since the first send), "ok", "message_id" or "error", "send_ms"}],
// "shutdown_ms", "client_log", "settings_commands"}. A failed send is
// recorded, not fatal: the script fails only if the producer cannot start.

const common = require('./common');
const { Producer } = require('rocketmq-client-nodejs');

const spec = {
  endpoints: { type: 'string' },
  topic: { type: 'string' },
  tag: { type: 'string' },
  seconds: { type: 'string', default: '8' },
  'interval-ms': { type: 'string', default: '100' },
};

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function main(args, log, result) {
  const endpoints = common.required(args, 'endpoints');
  const topic = common.required(args, 'topic');
  const tag = common.required(args, 'tag');
  const seconds = common.positiveNumber(args, 'seconds');
  const intervalMs = common.positiveNumber(args, 'interval-ms');

  const producer = new Producer({ endpoints, namespace: '', topics: [ topic ], logger: log });
  result.client_id = producer.clientId;
  result.sends = [];
  const started = common.now();
  await producer.startup();
  result.startup_ms = common.elapsedMs(started);
  try {
    const first = common.now();
    for (let index = 0; common.elapsedMs(first) < seconds * 1000; index++) {
      const entry = { index, at_ms: common.elapsedMs(first) };
      const sentAt = common.now();
      try {
        const receipt = await producer.send({ topic, tag, body: Buffer.from(`steady ${index}`) });
        entry.ok = true;
        entry.message_id = receipt.messageId;
      } catch (error) {
        entry.ok = false;
        entry.error = common.errorText(error);
      }
      entry.send_ms = common.elapsedMs(sentAt);
      result.sends.push(entry);
      await sleep(intervalMs);
    }
  } finally {
    const stopping = common.now();
    await producer.shutdown();
    result.shutdown_ms = common.elapsedMs(stopping);
  }
  return result;
}

common.run(spec, main);
