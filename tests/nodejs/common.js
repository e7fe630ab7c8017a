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
//
// A script whose spec includes credentialOptions takes --access-key and
// --secret-key (both or neither); sessionCredentials(values) turns them into
// the client's `sessionCredentials` option ({accessKey, accessSecret}), with
// which it signs every request (the `authorization` header, MQv2-HMAC-SHA1).
// Without them the client gets no `sessionCredentials` and sends no
// `authorization` header, as before. Such a script also takes --tls: the
// client then connects with TLS (its `sslEnabled` option), trusting Node's
// CAs, or those of the file GRPC_DEFAULT_SSL_ROOTS_FILE_PATH names (grpc-js
// reads it; NODE_EXTRA_CA_CERTS did not reach grpc-js 1.14.7 here).
//
// A failure's "error" is errorText(error): the exception's name and message
// (the client's ClientException message is "[request-id=…,
// response-code=<code>] <status message>"), its code with the code's name,
// and its cause chain (a failed startup wraps the refusal twice); when
// --deadline passed, the ERROR lines the client logged.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');

// --access-key / --secret-key, for the spec of a script that passes
// sessionCredentials(values) to its client.
const credentialOptions = {
  'access-key': { type: 'string' },
  'secret-key': { type: 'string' },
  tls: { type: 'boolean', default: false },
};

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
  if ((values['access-key'] === undefined) !== (values['secret-key'] === undefined)) {
    throw new Failure('--access-key and --secret-key must be given together');
  }
  return values;
}

// The client's `sessionCredentials` option from --access-key/--secret-key,
// or undefined (no credentials, no `authorization` header) without them.
function sessionCredentials(values) {
  if (values['access-key'] === undefined && values['secret-key'] === undefined) return undefined;
  return { accessKey: values['access-key'], accessSecret: values['secret-key'] };
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

// The name of a status code of the client's protocol (apache.rocketmq.v2.Code),
// e.g. 40100 → UNAUTHORIZED; undefined for other codes (gRPC's, Node's).
function statusCodeName(code) {
  if (typeof code !== 'number') return undefined;
  try {
    const { Code } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');
    return Object.keys(Code).find(name => Code[name] === code);
  } catch {
    return undefined;
  }
}

function errorText(error) {
  if (!(error instanceof Error)) return String(error);
  let text = `${error.name}: ${error.message}`;
  if (error.code !== undefined) {
    // Status codes of the protocol are 5 digits; gRPC's are below 20.
    const name = error.code >= 10000 ? statusCodeName(error.code) : undefined;
    text += name ? ` (code ${error.code} ${name})` : ` (code ${error.code})`;
  }
  if (error.cause) text += `; cause: ${errorText(error.cause)}`;
  return text;
}

// `text` followed by the (distinct) ERROR lines the client logged, if any.
function withClientErrors(text, log) {
  const lines = [ ...new Set(log.errors.map(line => line.replace(/\s+/g, ' '))) ]
    .map(line => (line.length > 500 ? `${line.slice(0, 499)}…` : line));
  if (!lines.length) return text;
  const quoted = lines.slice(0, 8);
  if (lines.length > quoted.length) quoted.push(`… ${lines.length - quoted.length} more in client_log`);
  return `${text}; the client logged: ${quoted.join(' | ')}`;
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
    // A hung call raised nothing; what the client logged (a refused
    // telemetry stream, say) is the only trace of why.
    const error = withClientErrors(`gave up after the --deadline of ${values.deadline} s (a client call hung)`, log);
    finish({ ...partial, ok: false, error }, 2);
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
  credentialOptions,
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
  sessionCredentials,
  withClientErrors,
};
