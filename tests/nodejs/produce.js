'use strict';
// Starts an official Node.js Producer, sends one message per --sizes entry and
// shuts down.
//
//   node produce.js --endpoints 127.0.0.1:8081 --topic T [--tag X] [--key K]...
//     [--property K=V]... [--sizes 1024,300] [--compressible]
//     [--access-key AK --secret-key SK] [--deadline S] [--log-file F]
//
// The client's startup() resolves only once the server's settings reply
// arrived on the telemetry stream; the script also reports that reply (as the
// client logged it) and what the client took from it: max_body_size and the
// exponential backoff (the client asserts the reply carries one). Bodies are
// random bytes (binary, not UTF-8), or repeated text with --compressible. Every message carries --tag, the --key
// values and the --property pairs, plus the property `index`.
//
// Output: {"ok", "client_id", "startup_ms", "settings_received",
// "max_body_size", "backoff", "sent": [{"message_id", "index", "offset",
// "queue_id", "broker" (the route queue the client chose),
// "size", "sha256", "body_hex" (bodies up to 64 KiB), "tag", "keys",
// "properties", "send_ms"}], "shutdown_ms", "client_log", "settings_commands"}.
//
// With --access-key/--secret-key the client signs its requests with them (its
// `sessionCredentials` option). A refusal fails the run with the client's
// error in "error": startup() rejects once the route query was refused three
// times ("Error: Startup the rocketmq client failed, … ; cause: … ; cause:
// UnauthorizedException: [request-id=…, response-code=40100] <message> (code
// 40100 UNAUTHORIZED)"), a send with the refused send's exception.

const crypto = require('node:crypto');
const common = require('./common');
const { Producer } = require('rocketmq-client-nodejs');

const spec = {
  ...common.credentialOptions,
  endpoints: { type: 'string' },
  topic: { type: 'string' },
  tag: { type: 'string' },
  key: { type: 'string', multiple: true, default: [] },
  property: { type: 'string', multiple: true, default: [] },
  sizes: { type: 'string', default: '1024' },
  // Bodies of repeated text instead of random bytes (they compress well).
  compressible: { type: 'boolean', default: false },
  // Generate common.collidingMessageId's ids, as a producer whose host, pid
  // and clock coincide with another's would.
  'colliding-message-ids': { type: 'boolean', default: false },
};

async function main(args, log, result) {
  const endpoints = common.required(args, 'endpoints');
  const topic = common.required(args, 'topic');
  const sizes = args.sizes.split(',').filter(Boolean).map(Number);
  if (!sizes.length || sizes.some(size => !Number.isInteger(size) || size <= 0)) {
    throw new common.Failure(`--sizes is not a list of positive integers: ${args.sizes}`);
  }
  const userProperties = common.properties(args.property);
  if (args['colliding-message-ids']) common.makeMessageIdsCollide();

  const producer = new Producer({
    endpoints,
    namespace: '',
    topics: [ topic ],
    logger: log,
    sessionCredentials: common.sessionCredentials(args),
    sslEnabled: args.tls,
  });
  result.client_id = producer.clientId;
  result.sent = [];
  const started = common.now();
  process.stderr.write(`starting producer ${producer.clientId} via ${endpoints}\n`);
  await producer.startup();
  result.startup_ms = common.elapsedMs(started);
  try {
    // startup() waited for the first settings command; prove it came and
    // what the client applied from it.
    result.settings_received = log.settings.length > 0;
    const publishing = producer.publishingSettings;
    result.max_body_size = publishing.maxBodySizeBytes;
    const retry = publishing.getRetryPolicy ? publishing.getRetryPolicy() : publishing.retryPolicy;
    result.backoff = retry && retry.toProtobuf ? retry.toProtobuf().toObject() : null;
    if (!result.settings_received) {
      throw new common.Failure('startup() returned but no settings command was logged');
    }
    if (!(result.max_body_size > 0)) {
      throw new common.Failure(`the settings reply left max_body_size at ${result.max_body_size}`);
    }
    for (const [ index, size ] of sizes.entries()) {
      const body = args.compressible ? Buffer.alloc(size, 'meridian ') : crypto.randomBytes(size);
      const properties = new Map(userProperties);
      properties.set('index', String(index));
      const message = { topic, body, keys: [ ...args.key ], properties };
      if (args.tag !== undefined) message.tag = args.tag;
      const sentAt = common.now();
      let receipt;
      try {
        receipt = await producer.send(message);
      } catch (error) {
        throw new common.Failure(`send of message ${index} (${size} bytes) failed: ${common.errorText(error)}`);
      }
      if (!receipt || !receipt.messageId) {
        throw new common.Failure(`send of message ${index} returned no message id`);
      }
      result.sent.push({
        index,
        message_id: receipt.messageId,
        offset: receipt.offset,
        queue_id: receipt.messageQueue.queueId,
        broker: receipt.messageQueue.broker.name,
        tag: args.tag ?? null,
        keys: [ ...args.key ].sort(),
        properties: Object.fromEntries(properties),
        send_ms: common.elapsedMs(sentAt),
        ...common.describeBody(body),
      });
    }
  } finally {
    const stopping = common.now();
    await producer.shutdown();
    result.shutdown_ms = common.elapsedMs(stopping);
  }
  return result;
}

common.run(spec, main);
