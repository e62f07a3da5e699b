"use strict";
// A minimal Multifrost v4 worker written in Node.js (zeromq + msgpackr), for python_parent.py.
//
// The Python parent binds a DEALER and starts `node worker.js` with COMLINK_ZMQ_PORT set; this
// worker connects a ROUTER to it, answers CALLs with RESPONSE or ERROR (message only), echoes
// HEARTBEATs and exits on SHUTDOWN. It serves one call at a time: tests/interop/child.js is a
// fuller peer (concurrent calls, console forwarding, connect mode).

const crypto = require("node:crypto");
const { Router } = require("zeromq");
const { Packr } = require("msgpackr");

const APP = "comlink_ipc_v4";
// Plain maps, no msgpackr records; int64 beyond 2^53 decodes as BigInt.
const packr = new Packr({ useRecords: false, int64AsType: "auto" });

const methods = {
  add: (a, b) => a + b,
  greet: (name) => `Hello, ${name}, from Node.js`,
  sha256: (data) => crypto.createHash("sha256").update(data).digest("hex"), // data arrives as a Buffer
  fail: () => {
    throw new Error("something went wrong in Node.js");
  },
};

async function answer(message) {
  const name = message.function;
  if (typeof name !== "string" || name.startsWith("_") || !Object.hasOwn(methods, name)) {
    return { type: "error", error: `Function '${name}' not found` };
  }
  try {
    return { type: "response", result: await methods[name](...(message.args ?? [])) };
  } catch (err) {
    return { type: "error", error: err.message };
  }
}

async function main() {
  const port = process.env.COMLINK_ZMQ_PORT;
  if (!port) {
    process.stderr.write("FATAL: COMLINK_ZMQ_PORT is not set: start this worker from a Multifrost parent\n");
    process.exit(2);
  }
  const socket = new Router({ linger: 0 });
  socket.connect(`tcp://127.0.0.1:${port}`);
  for await (const frames of socket) {
    const identity = frames[0];
    const message = packr.unpack(frames[frames.length - 1]);
    if (message.app !== APP) continue;
    let reply = null;
    if (message.type === "call" && (message.namespace ?? "default") === "default") {
      reply = await answer(message);
    } else if (message.type === "heartbeat") {
      reply = { type: "heartbeat", metadata: { ...message.metadata, hb_response: true } };
    } else if (message.type === "shutdown") {
      break;
    }
    if (reply !== null) {
      const envelope = { app: APP, id: message.id, timestamp: Date.now() / 1000, ...reply };
      await socket.send([identity, "", packr.pack(envelope)]);
    }
  }
  socket.close();
}

main();
