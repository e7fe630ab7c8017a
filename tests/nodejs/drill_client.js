'use strict';
// Drill client: an official Node.js Producer or SimpleConsumer that runs until
// told to stop, printing one JSON event per line, for `meridian drill run`.
//
//   node drill_client.js --role producer|consumer --endpoints HOST:PORT --topic T
//     [--group drill] [--tag drill] [--interval-ms 100] [--invisible-ms 10000]
//     [--batch 16] [--await-ms 2000] [--log-file F]
//
// Events on stdout, one JSON object a line (nothing else goes to stdout; the
// client logs to --log-file, default ~/logs/rocketmq-nodejs/drill-client.log):
//   {"event": "ready", "client_id"}            started (producer) / subscribed
//   {"event": "sent", "message_id"}            producer, per send answered OK
//   {"event": "send_failed", "error"}          producer; the loop goes on
//   {"event": "received", "message_id"}        consumer, per message, then its ack:
//   {"event": "acked", "message_id"}  or  {"event": "ack_failed", "message_id", "error"}
//   {"event": "receive_failed", "error"}       consumer; retried after 100 ms
//   {"event": "stopped"}                       after a clean shutdown, exit 0
//   {"event": "failed", "error"}               the client could not start, exit 1
//                                              (bad arguments: exit 2)
// Every event carries "at_ms", milliseconds since the script started.
//
// From the environment (what `meridian drill run` sets for a deployment with
// [access] or [client_tls]): DRILL_ACCESS_KEY and DRILL_SECRET_KEY, the access
// key every request is signed with (`sessionCredentials`); DRILL_TLS=1,
// connect with TLS (`sslEnabled`), trusting the CA certificates grpc-js reads
// from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (it does not see Node's
// NODE_EXTRA_CA_CERTS); the runner sets both to the deployment's CA.
//
// It stops at end of file on stdin (the drill runner closes it), SIGTERM or
// SIGINT. A call in flight then is abandoned (its outcome is not reported),
// so stopping never waits for a long poll. The producer sends `drill <n>` once
// per --interval-ms (without catching up after a slow send). Two client
// defaults are changed: REQUEST_TIMEOUT_MS and `maxRetryAttempts` (below).

const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');

const { errorText } = require('./common');

const started = process.hrtime.bigint();
// Pause after a failed receive: short, because the drill measures recovery in ms.
const RECEIVE_RETRY_PAUSE_MS = 100;
// Per-call timeout (the client's default is 3000 ms, its minimum 1000). The
// client makes up to 3 attempts per send, one right after the other, so with
// the default a send to a node that hangs (stopped, or cut off by a
// partition) fails only after 9 s; with 1 s, after about 3 s. A receive's
// deadline is this plus the long-polling time.
const REQUEST_TIMEOUT_MS = 1000;

function emit(event, fields = {}) {
  const atMs = Math.round(Number(process.hrtime.bigint() - started) / 1e6);
  // Writes to a pipe or a file are synchronous in Node.js on Linux: each line
  // is out before the next call.
  process.stdout.write(`${JSON.stringify({ event, ...fields, at_ms: atMs })}\n`);
}


// The client's logger (its `logger` option): every line appended to a file,
// nothing kept in memory, so a long drill does not grow the process.
class FileLogger {
  constructor(file) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.stream = fs.createWriteStream(file, { flags: 'a' });
  }

  #write(level, args) {
    this.stream.write(`${new Date().toISOString()} ${level} ${util.format(...args)}\n`);
  }

  debug() {}

  info(...args) {
    this.#write('INFO', args);
  }

  warn(...args) {
    this.#write('WARN', args);
  }

  error(...args) {
    this.#write('ERROR', args);
  }

  // The client calls close() when it shuts down; the script ends the stream.
  close() {}
}

function parseArguments() {
  const number = { type: 'string' };
  const { values } = util.parseArgs({
    options: {
      role: { type: 'string' },
      endpoints: { type: 'string' },
      topic: { type: 'string' },
      group: { type: 'string', default: 'drill' },
      tag: { type: 'string', default: 'drill' },
      'interval-ms': { ...number, default: '100' },
      'invisible-ms': { ...number, default: '10000' },
      batch: { ...number, default: '16' },
      'await-ms': { ...number, default: '2000' },
      'log-file': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.role !== 'producer' && values.role !== 'consumer') {
    throw new Error(`--role must be producer or consumer, not ${values.role}`);
  }
  for (const name of [ 'endpoints', 'topic' ]) {
    if (!values[name]) throw new Error(`--${name} is required`);
  }
  for (const name of [ 'interval-ms', 'invisible-ms', 'batch', 'await-ms' ]) {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} is not a positive integer: ${values[name]}`);
    values[name] = value;
  }
  return values;
}

// The access key and TLS switch from DRILL_ACCESS_KEY, DRILL_SECRET_KEY and
// DRILL_TLS.
function fromEnvironment() {
  const { DRILL_ACCESS_KEY: accessKey, DRILL_SECRET_KEY: accessSecret } = process.env;
  const tls = process.env.DRILL_TLS ?? '0';
  if ((accessKey === undefined) !== (accessSecret === undefined)) {
    throw new Error('DRILL_ACCESS_KEY and DRILL_SECRET_KEY must be set together');
  }
  if (tls !== '0' && tls !== '1') throw new Error(`DRILL_TLS must be 1 or 0, not ${tls}`);
  if (tls === '1' && !process.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH) {
    process.stderr.write('DRILL_TLS=1 without GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: trusting the default roots\n');
  }
  return {
    sessionCredentials: accessKey === undefined ? undefined : { accessKey, accessSecret },
    sslEnabled: tls === '1',
  };
}

// Resolves once stdin reaches end of file, or on SIGTERM / SIGINT.
function watchForStop() {
  let stop;
  const stopped = new Promise(resolve => { stop = resolve; });
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  let requested = false;
  stopped.then(() => { requested = true; });
  return { stopped, isRequested: () => requested };
}

const ABANDONED = Symbol('abandoned');

// The call's outcome, or ABANDONED when stop comes first; the call's later
// rejection is then ignored instead of becoming an unhandled rejection.
function unlessStopped(call, stop) {
  call.catch(() => {});
  return Promise.race([ call, stop.stopped.then(() => ABANDONED) ]);
}

function pause(ms, stop) {
  let timer;
  return Promise.race([
    new Promise(resolve => { timer = setTimeout(resolve, ms); }),
    stop.stopped,
  ]).finally(() => clearTimeout(timer));
}

async function produce(args, producer, stop) {
  let nextSendMs = Date.now();
  for (let index = 0; !stop.isRequested(); index++) {
    let receipt;
    try {
      receipt = await unlessStopped(
        producer.send({ topic: args.topic, tag: args.tag, body: Buffer.from(`drill ${index}`) }),
        stop,
      );
    } catch (error) {
      emit('send_failed', { error: errorText(error) });
    }
    if (receipt === ABANDONED) break;
    if (receipt) emit('sent', { message_id: receipt.messageId });
    nextSendMs = Math.max(nextSendMs + args['interval-ms'], Date.now());
    await pause(nextSendMs - Date.now(), stop);
  }
}

async function consume(args, consumer, stop) {
  while (!stop.isRequested()) {
    let messages;
    try {
      messages = await unlessStopped(consumer.receive(args.batch, args['invisible-ms']), stop);
    } catch (error) {
      emit('receive_failed', { error: errorText(error) });
      await pause(RECEIVE_RETRY_PAUSE_MS, stop);
      continue;
    }
    if (messages === ABANDONED) break;
    for (const message of messages) emit('received', { message_id: message.messageId });
    // Acks are short calls: the batch is acked even when stop came meanwhile.
    for (const message of messages) {
      try {
        await consumer.ack(message);
        emit('acked', { message_id: message.messageId });
      } catch (error) {
        emit('ack_failed', { message_id: message.messageId, error: errorText(error) });
      }
    }
  }
}

function exit(code) {
  // The client's timers and gRPC channels would keep the process alive.
  process.stdout.write('', () => process.exit(code));
}

async function main() {
  let args;
  let access;
  try {
    args = parseArguments();
    access = fromEnvironment();
  } catch (error) {
    emit('failed', { error: `bad arguments: ${error.message}` });
    return exit(2);
  }
  let rocketmq;
  try {
    rocketmq = require('rocketmq-client-nodejs');
  } catch (error) {
    emit('failed', { error: `load the client (NODE_PATH=$(scripts/nodejs-env.sh)/node_modules?): ${errorText(error)}` });
    return exit(1);
  }
  const { Producer, SimpleConsumer } = rocketmq;
  const stop = watchForStop();
  const home = process.env.HOME || process.cwd();
  const logger = new FileLogger(args['log-file'] || path.join(home, 'logs', 'rocketmq-nodejs', 'drill-client.log'));
  const common = {
    endpoints: args.endpoints,
    namespace: '',
    requestTimeout: REQUEST_TIMEOUT_MS,
    logger,
    sslEnabled: access.sslEnabled,
    ...(access.sessionCredentials ? { sessionCredentials: access.sessionCredentials } : {}),
  };
  const client = args.role === 'producer'
    ? new Producer({ ...common, topics: [ args.topic ] })
    : new SimpleConsumer({
      ...common,
      consumerGroup: args.group,
      subscriptions: new Map([ [ args.topic, args.tag ] ]),
      awaitDuration: args['await-ms'],
      // By default receive() retries an INTERNAL_ERROR answer (what a router
      // says while its region's node is down) twice, 1 s apart, before it
      // fails: a failover would look 1-2 s longer than it is and report no
      // receive_failed. One attempt, and this loop retries after 100 ms.
      maxRetryAttempts: 1,
    });
  let startup;
  try {
    // startup() waits for the server's settings, without a time limit.
    startup = await unlessStopped(client.startup(), stop);
  } catch (error) {
    emit('failed', { error: `start the ${args.role}: ${errorText(error)}` });
    return exit(1);
  }
  if (startup !== ABANDONED) {
    emit('ready', { client_id: client.clientId });
    if (args.role === 'producer') {
      await produce(args, client, stop);
    } else {
      await consume(args, client, stop);
    }
  }
  try {
    await client.shutdown();
  } catch (error) {
    process.stderr.write(`shut the ${args.role} down: ${errorText(error)}\n`);
  }
  emit('stopped');
  logger.stream.end(() => exit(0));
}

main();
