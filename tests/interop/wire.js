"use strict";
// Multifrost v4 wire helpers for the Node interop peer: msgpack codec configured the way the
// JavaScript implementation uses msgpackr, message envelopes, and a JSON "tagged value" form
// so that Python tests can hand values to the peer and check what it received.

const crypto = require("node:crypto");
const { Packr, Unpackr } = require("msgpackr");

const APP_ID = "comlink_ipc_v4";
const DEFAULT_NAMESPACE = "default";

// Plain maps (no msgpackr records); int64 beyond 2^53 decodes as BigInt. With these options
// msgpackr packs an integral number in 32-bit range as an int, a larger integral number as
// float64, `undefined` as ext 0 (d4 00 00), a Date as timestamp ext -1, a Buffer as bin.
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, int64AsType: "auto" });

function isPlainObject(value) {
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

// NaN and +/-Infinity are nil on the wire (PROTOCOL.md); applied before packing and after
// decoding. Buffers, Dates and BigInts pass through untouched.
function nonFiniteToNull(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (Array.isArray(value)) return value.map(nonFiniteToNull);
  if (value instanceof Map) {
    return new Map([...value].map(([k, v]) => [k, nonFiniteToNull(v)]));
  }
  if (isPlainObject(value)) {
    const out = {};
    for (const key of Object.keys(value)) out[key] = nonFiniteToNull(value[key]);
    return out;
  }
  return value;
}

function pack(message, { rawFloats = false } = {}) {
  return packr.pack(rawFloats ? message : nonFiniteToNull(message));
}

// Returns the decoded message map, or throws with a reason when the payload is not a
// Multifrost v4 message (not msgpack, not a map, wrong app).
function unpack(payload, { rawFloats = false } = {}) {
  const decoded = unpackr.unpack(payload);
  if (!isPlainObject(decoded)) throw new Error("payload is not a map");
  if (decoded.app !== APP_ID) throw new Error(`unknown app ${JSON.stringify(String(decoded.app))}`);
  return rawFloats ? decoded : nonFiniteToNull(decoded);
}

function envelope(type, fields = {}, id = crypto.randomUUID()) {
  return { app: APP_ID, id, type, timestamp: Date.now() / 1000, ...fields };
}

// ---- tagged JSON values ------------------------------------------------------------------
// JSON cannot carry BigInt, bytes, Date, undefined, NaN, -0 or non-string map keys, so those
// travel as {"$t": <tag>, ...}. Big byte strings are summarised as length + sha256.
const BYTES_INLINE_LIMIT = 65536;

function toTagged(value) {
  if (value === undefined) return { $t: "undefined" };
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  if (typeof value === "number") {
    if (Number.isNaN(value)) return { $t: "float", v: "NaN" };
    if (!Number.isFinite(value)) return { $t: "float", v: value > 0 ? "Infinity" : "-Infinity" };
    if (Object.is(value, -0)) return { $t: "float", v: "-0" };
    return value;
  }
  if (typeof value === "bigint") return { $t: "bigint", v: value.toString() };
  if (value instanceof Uint8Array) {
    const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (buf.length > BYTES_INLINE_LIMIT) {
      return { $t: "bytes", len: buf.length, sha256: crypto.createHash("sha256").update(buf).digest("hex") };
    }
    return { $t: "bytes", b64: buf.toString("base64") };
  }
  if (value instanceof Date) {
    const ms = value.getTime();
    return { $t: "date", ms: Number.isNaN(ms) ? null : ms };
  }
  if (Array.isArray(value)) return value.map(toTagged);
  if (value instanceof Map) return { $t: "map", entries: [...value].map(([k, v]) => [toTagged(k), toTagged(v)]) };
  if (isPlainObject(value)) {
    const out = {};
    for (const key of Object.keys(value)) out[key] = toTagged(value[key]);
    return Object.hasOwn(value, "$t") ? { $t: "object", v: out } : out;
  }
  return { $t: "other", type: typeof value, repr: String(value) };
}

function fromTagged(value) {
  if (Array.isArray(value)) return value.map(fromTagged);
  if (!isPlainObject(value)) return value;
  if (!Object.hasOwn(value, "$t")) return fromTaggedEntries(value);
  switch (value.$t) {
    case "undefined":
      return undefined;
    case "float":
      return Number(value.v);
    case "bigint":
      return BigInt(value.v);
    case "bytes":
      if (typeof value.b64 === "string") return Buffer.from(value.b64, "base64");
      return Buffer.alloc(value.len, value.fill ?? 0);
    case "date":
      return new Date(value.ms);
    case "map":
      return new Map(value.entries.map(([k, v]) => [fromTagged(k), fromTagged(v)]));
    case "object":
      return fromTaggedEntries(value.v);
    default:
      throw new Error(`unknown tag ${JSON.stringify(value.$t)}`);
  }
}

function fromTaggedEntries(object) {
  const out = {};
  for (const key of Object.keys(object)) out[key] = fromTagged(object[key]);
  return out;
}

// zeromq.js 6 allows one send() in flight per socket; this queue serialises sends so that
// replies produced concurrently leave one after another, in the order they were queued.
class SendQueue {
  constructor(socket, onError) {
    this.socket = socket;
    this.onError = onError;
    this.pending = [];
    this.running = false;
  }

  send(frames) {
    this.pending.push(frames);
    if (!this.running) this.drain();
  }

  async drain() {
    this.running = true;
    while (this.pending.length > 0) {
      const frames = this.pending.shift();
      try {
        await this.socket.send(frames);
      } catch (err) {
        this.onError(err);
      }
    }
    this.running = false;
  }
}

// ---- what a Multifrost v4 peer knows -------------------------------------------------------
// Every top-level key and message type of PROTOCOL.md. A v4 peer must never be sent anything
// else (extensions of multifrost go only to peers that announced them): the peer records what
// it receives beyond these so that the Python tests can assert that nothing unknown came in.
const V4_TYPES = new Set(["call", "response", "error", "stdout", "stderr", "heartbeat", "shutdown"]);
const V4_KEYS = new Set(["app", "id", "type", "timestamp", "function", "args", "namespace", "client_name",
  "clientName", "result", "error", "output", "metadata"]);

class Strangers {
  constructor() {
    this.seen = new Set();
  }

  // Notes the unknown type and top-level keys of a received message, as "type:x" / "key:y".
  note(message) {
    if (!V4_TYPES.has(message.type)) this.seen.add(`type:${String(message.type)}`);
    for (const key of Object.keys(message)) if (!V4_KEYS.has(key)) this.seen.add(`key:${key}`);
  }

  list() {
    return [...this.seen].sort();
  }
}

module.exports = {
  Strangers,
  SendQueue,
  APP_ID,
  DEFAULT_NAMESPACE,
  pack,
  unpack,
  envelope,
  toTagged,
  fromTagged,
};
