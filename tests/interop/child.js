"use strict";
// The child (worker) role of the Node interop peer: a ROUTER that answers CALLs, echoes
// heartbeats and exits on SHUTDOWN. Behaves like the JavaScript implementation's child:
// errors carry the message only (no traceback), console output is forwarded as STDOUT/STDERR
// messages framed with the caller's identity.

const { AsyncLocalStorage } = require("node:async_hooks");
const util = require("node:util");
const { Router } = require("zeromq");
const registry = require("./registry");
const wire = require("./wire");

// Identity of the parent whose CALL is running, so console output reaches that parent.
const callerIdentity = new AsyncLocalStorage();
// Message types and top-level keys received that a v4 peer does not know (see wire.Strangers).
const strangers = new wire.Strangers();
// Keys seen in the metadata of CALLs (v4 allows any; a Python parent sends none to a v4 child).
const callMetadataKeys = new Set();

function describeType(value) {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (Buffer.isBuffer(value)) return "Buffer";
  if (value instanceof Uint8Array) return "Uint8Array";
  if (value instanceof Date) return "Date";
  if (value instanceof Map) return "Map";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

// The public surface a parent may call. Anything not an own property here is "not found".
const methods = {
  add: (a, b) => a + b,
  echo: (value) => value,
  echo_all: (...args) => args,
  fail: (message = "failure requested") => {
    throw new Error(message);
  },
  slow: (ms) => new Promise((resolve) => setTimeout(() => resolve(ms), ms)),
  crash: () => process.exit(3),
  big: (n) => Buffer.alloc(n, 0x78),
  date_now: () => new Date(),
  type_of: describeType,
  print: (text, stream = "stdout") => {
    (stream === "stderr" ? console.error : console.log)(text);
    return null;
  },
  nothing: () => undefined,
  int_keys: () => new Map([[1, "one"], [2, "two"]]),
  unencodable: () => Symbol("cannot cross the wire"),
  pid: () => process.pid,
  unknown_seen: () => strangers.list(),
  call_metadata_seen: () => [...callMetadataKeys].sort(),
  _secret: () => "private",
  version: "interop-peer-1",
};

class Worker {
  constructor(socket, namespace) {
    this.socket = socket;
    this.namespace = namespace;
    this.lastIdentity = null;
    this.queue = new wire.SendQueue(socket, (err) => log(`send failed: ${err.message}`));
  }

  send(identity, message) {
    let payload;
    try {
      payload = wire.pack(message);
    } catch (err) {
      if (message.type !== "response") {
        log(`cannot encode ${message.type}: ${err.message}`);
        return;
      }
      payload = wire.pack(wire.envelope("error", { error: `Result cannot be encoded: ${err.message}` }, message.id));
    }
    this.queue.send([identity, Buffer.alloc(0), payload]);
  }

  forwardConsole() {
    const forward = (stream) => (...args) => {
      const identity = callerIdentity.getStore() ?? this.lastIdentity;
      if (identity === null) return;
      this.send(identity, wire.envelope(stream, { output: util.format(...args) }));
    };
    console.log = forward("stdout");
    console.info = console.log;
    console.error = forward("stderr");
    console.warn = console.error;
  }

  async serve() {
    for await (const frames of this.socket) {
      if (frames.length < 2) {
        log(`dropped a message of ${frames.length} frame(s)`);
        continue;
      }
      const identity = frames[0];
      let message;
      try {
        message = wire.unpack(frames[frames.length - 1]);
      } catch (err) {
        log(`dropped a payload: ${err.message}`);
        continue;
      }
      this.lastIdentity = identity;
      strangers.note(message);
      if (message.type === "call") {
        if (message.metadata !== null && typeof message.metadata === "object") {
          for (const key of Object.keys(message.metadata)) callMetadataKeys.add(key);
        }
        this.handleCall(identity, message);
      } else if (message.type === "heartbeat") {
        // Echo at once, same id, the request's metadata (hb_timestamp included) plus hb_response.
        this.send(identity, wire.envelope("heartbeat", {
          metadata: { ...message.metadata, hb_response: true },
        }, message.id));
      } else if (message.type === "shutdown") {
        return;
      }
    }
  }

  async handleCall(identity, message) {
    const namespace = message.namespace ?? wire.DEFAULT_NAMESPACE;
    if (namespace !== this.namespace) return;
    const id = message.id;
    const fail = (text) => this.send(identity, wire.envelope("error", { error: text }, id ?? undefined));
    const name = message.function;
    if (typeof name !== "string") return fail("Message missing 'function' field");
    if (typeof id !== "string") return fail("Message missing 'id' field");
    if (name.startsWith("_")) return fail(`Cannot call private method '${name}'`);
    if (!Object.hasOwn(methods, name)) return fail(`Function '${name}' not found`);
    if (typeof methods[name] !== "function") return fail(`'${name}' is not callable`);
    const args = Array.isArray(message.args) ? message.args : [];
    try {
      const result = await callerIdentity.run(identity, () => methods[name](...args));
      this.send(identity, wire.envelope("response", { result }, id));
    } catch (err) {
      fail(err instanceof Error ? err.message : String(err));
    }
  }
}

function log(text) {
  process.stderr.write(`[interop peer] ${text}\n`);
}

// Exit when the process that started us is gone (the JavaScript parent starts children
// through /bin/sh and may signal only the shell), so the peer never outlives a test.
function exitWithParent(beforeExit = async () => {}) {
  const parentPid = process.ppid;
  const timer = setInterval(() => {
    let alive = process.ppid === parentPid;
    if (alive) {
      try {
        process.kill(parentPid, 0);
      } catch (err) {
        alive = err.code === "EPERM";
      }
    }
    if (!alive) {
      log(`parent ${parentPid} is gone, exiting`);
      clearInterval(timer);
      beforeExit().finally(() => process.exit(0));
    }
  }, 250);
  timer.unref();
}

function fatal(text) {
  process.stderr.write(`FATAL: ${text}\n`);
  process.exit(2);
}

async function runWorker(socket, namespace, onStop = async () => {}) {
  const worker = new Worker(socket, namespace);
  worker.forwardConsole();
  await worker.serve();
  // Shutdown: give queued replies a moment to leave, then stop.
  socket.linger = 1000;
  socket.close();
  await onStop();
  process.exit(0);
}

// Spawn mode: connect to the parent's DEALER on COMLINK_ZMQ_PORT.
async function runSpawnChild() {
  const raw = process.env.COMLINK_ZMQ_PORT;
  if (raw === undefined) fatal("COMLINK_ZMQ_PORT is not set");
  const port = /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
  if (!(port >= 1024 && port <= 65535)) fatal(`COMLINK_ZMQ_PORT must be an integer in 1024..65535, got ${JSON.stringify(raw)}`);
  exitWithParent();
  const socket = new Router({ linger: 0 });
  socket.connect(`tcp://127.0.0.1:${port}`);
  await runWorker(socket, process.env.MULTIFROST_NAMESPACE || wire.DEFAULT_NAMESPACE);
}

// Connect mode: bind a ROUTER on loopback, register `serviceId` in the registry, print one
// JSON "ready" line on stdout, and unregister on SIGTERM/SIGINT or SHUTDOWN.
async function runServiceChild(serviceId, port) {
  if (!serviceId) fatal("serve needs --service-id ID");
  const socket = new Router({ linger: 0 });
  try {
    await socket.bind(`tcp://127.0.0.1:${port || "*"}`);
  } catch (err) {
    fatal(`cannot bind port ${port}: ${err.message}`);
  }
  const boundPort = Number(socket.lastEndpoint.split(":").pop());
  try {
    await registry.register(serviceId, boundPort);
  } catch (err) {
    fatal(err.message);
  }
  const stop = () => registry.unregister(serviceId).catch((err) => log(`unregister failed: ${err.message}`));
  exitWithParent(stop);
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => stop().then(() => process.exit(0)));
  }
  process.stdout.write(`${JSON.stringify({ ready: true, service_id: serviceId, port: boundPort, pid: process.pid })}\n`);
  await runWorker(socket, process.env.MULTIFROST_NAMESPACE || wire.DEFAULT_NAMESPACE, stop);
}

module.exports = { runSpawnChild, runServiceChild, fatal };
