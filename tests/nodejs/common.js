'use strict';
// Shared plumbing of the scripts that drive the official RocketMQ Node.js
// client (npm rocketmq-client-nodejs, unmodified) against Meridian.
//
// Every script prints exactly one JSON object on stdout: {"ok": true, ...} on
// success, or {"ok": false, "error": "...", ...} before exiting non-zero (1 on
// a failed check or exception, 2 when --deadline passed: a hung client call).
// Progress goes to stderr. The Rust integration tests (nodejs_client.rs) run
// the scripts and assert on that JSON.
//
// The client is given a logger (its `logger` option) that writes every line
// to --log-file and records the WARN and ERROR lines, so that a script can
// report them (a clean run, shutdown included, logs no ERROR), and that keeps
// the settings the server pushed on the telemetry stream (the client logs
// each as "Received settings command").

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');

// Bodies up to this size are echoed in full (hex) in the JSON output.
const ECHO_BODY_LIMIT = 64 * 1024;

class ClientLog {
  constructor(file) {
    this.file = file;
    this.errors = [];
    this.warnings = [];
    this.settings = [];
    if (file) {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      this.stream = fs.createWriteStream(file, { flags: 'a' });
    }
  }

  #write(level, args) {
    const line = `${new Date().toISOString()} ${level} ${util.format(...args)}`;
    if (this.stream) this.stream.write(`${line}\n`);
    return line;
  }

  info(...args) {
    if (typeof args[0] === 'string' && args[0].startsWith('Received settings command')) {
      // (format, clientId, settings.toObject())
      this.settings.push({ at_ms: Date.now(), settings: args[2] });
    }
    this.#write('INFO', args);
  }

  debug(...args) {
    this.#write('DEBUG', args);
  }

  warn(...args) {
    this.warnings.push(this.#write('WARN', args));
  }

  error(...args) {
    this.errors.push(this.#write('ERROR', args));
  }

  // The client calls close() at the end of its shutdown; the stream stays
  // open for whatever a later client of the same process logs.
  close() {}

  summary() {
    return { errors: [ ...this.errors ], warnings: [ ...this.warnings ], file: this.file || null };
  }
}

class Failure extends Error {
  // A failed check: the message is the reason, `details` goes into the JSON.
  constructor(message, details = {}) {
    super(message);
    this.details = details;
  }
}

// Parses --name=value / --name value options. `spec` maps each name to
// {type: 'string'|'boolean', multiple?, default?}; --deadline and --log-file
// are always accepted.
function parseArguments(spec) {
  const options = {
    ...spec,
    deadline: { type: 'string', default: '120' },
    'log-file': { type: 'string' },
  };
  const { values } = util.parseArgs({ options, strict: true, allowPositionals: false });
  values.deadline = Number(values.deadline);
  if (!(values.deadline > 0)) throw new Failure(`--deadline is not a positive number: ${values.deadline}`);
  return values;
}

// The message id a producer on a host whose MAC, pid (1, as in a container)
// and clock second coincide with another's generates for its index-th
// message (RocketMQ's id layout: version 01, 6 bytes MAC, 2 bytes pid,
// 4 bytes seconds since 2021, 4 bytes sequence); the same as
// tests/python/common.py's colliding_message_id.
function collidingMessageId(index) {
  return '01' + '0A0000000001' + '0001' + '05000000' + index.toString(16).toUpperCase().padStart(8, '0');
}

// Makes this process's official client generate collidingMessageId(0), (1),
// … instead of ids from its own MAC, pid and clock: replaces
// MessageIdFactory.create, the one place the client makes ids
// (dist/message/MessageId.js; PublishingMessage calls it per message).
function makeMessageIdsCollide() {
  const { MessageIdFactory } = require('rocketmq-client-nodejs/dist/message/MessageId');
  let next = 0;
  MessageIdFactory.create = () => {
    const id = collidingMessageId(next++);
    return { id, toString: () => id };
  };
}

function required(values, name) {
  const value = values[name];
  if (value === undefined || value === '') throw new Failure(`--${name} is required`);
  return value;
}

function positiveNumber(values, name) {
  const value = Number(values[name]);
  if (!Number.isFinite(value) || value < 0) throw new Failure(`--${name} is not a non-negative number: ${values[name]}`);
  return value;
}

function properties(list) {
  const map = new Map();
  for (const item of list || []) {
    const at = item.indexOf('=');
    if (at <= 0) throw new Failure(`--property is not KEY=VALUE: ${item}`);
    map.set(item.slice(0, at), item.slice(at + 1));
  }
  return map;
}

function describeBody(body) {
  const described = {
    size: body.length,
    sha256: crypto.createHash('sha256').update(body).digest('hex'),
  };
  if (body.length <= ECHO_BODY_LIMIT) described.body_hex = body.toString('hex');
  return described;
}

// A received MessageView as JSON: everything the cross-language tests compare.
function describeMessage(message) {
  return {
    message_id: message.messageId,
    topic: message.topic,
    tag: message.tag === undefined || message.tag === '' ? null : message.tag,
    keys: [ ...message.keys ].sort(),
    properties: Object.fromEntries(message.properties),
    message_group: message.messageGroup || null,
    delivery_attempt: message.deliveryAttempt ?? null,
    corrupted: message.corrupted === true,
    born_host: message.bornHost,
    born_timestamp_ms: message.bornTimestamp ? message.bornTimestamp.getTime() : null,
    has_receipt_handle: Boolean(message.receiptHandle),
    ...describeBody(message.body),
  };
}

function elapsedMs(start) {
  return Math.round(Number(process.hrtime.bigint() - start) / 1e6);
}

function now() {
  return process.hrtime.bigint();
}

function emit(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function errorText(error) {
  if (!(error instanceof Error)) return String(error);
  let text = `${error.name}: ${error.message}`;
  if (error.code !== undefined) text += ` (code ${error.code})`;
  if (error.cause) text += `; cause: ${errorText(error.cause)}`;
  return text;
}

// Runs `main(values, log)` (async, returning an object) and prints the JSON
// verdict; the result so far is `partial`, which main may fill in.
function run(spec, main) {
  let values;
  try {
    values = parseArguments(spec);
  } catch (error) {
    emit({ ok: false, error: `bad arguments: ${error.message}` });
    process.exit(1);
  }
  const home = process.env.HOME || process.cwd();
  const log = new ClientLog(values['log-file'] || path.join(home, 'logs', 'rocketmq-nodejs', 'client.log'));
  const partial = {};
  let finished = false;
  const finish = (result, code) => {
    if (finished) return;
    finished = true;
    emit({ ...result, client_log: log.summary(), settings_commands: log.settings });
    // The client's timers and gRPC channels would keep a hung process alive.
    process.stdout.write('', () => process.exit(code));
  };
  const timer = setTimeout(() => {
    process.stderr.write(`deadline of ${values.deadline} s passed\n`);
    finish({ ...partial, ok: false, error: `gave up after the --deadline of ${values.deadline} s (a client call hung)` }, 2);
  }, values.deadline * 1000);
  Promise.resolve()
    .then(() => main(values, log, partial))
    .then(result => {
      clearTimeout(timer);
      finish({ ...partial, ...result, ok: true }, 0);
    }, error => {
      clearTimeout(timer);
      process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
      const details = error instanceof Failure ? error.details : {};
      finish({ ...partial, ...details, ok: false, error: errorText(error) }, 1);
    });
}

module.exports = {
  ClientLog,
  collidingMessageId,
  makeMessageIdsCollide,
  Failure,
  describeBody,
  describeMessage,
  elapsedMs,
  errorText,
  now,
  positiveNumber,
  properties,
  required,
  run,
};
