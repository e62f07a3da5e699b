"use strict";
// Call the Python worker (python_worker.py) from Node.js: `node node_parent.js`
// ($PYTHON picks the interpreter, default python3; multifrost must be importable by it).
//
// A minimal Multifrost v4 parent: bind a DEALER, start the worker with COMLINK_ZMQ_PORT,
// send CALLs, match RESPONSE/ERROR by id, print STDOUT/STDERR messages, then SHUTDOWN.
// If the worker cannot be started, or exits before answering (say multifrost cannot be
// imported: its traceback is on stderr), the example says so and exits with code 1.

const { spawn } = require("node:child_process");
const crypto = require("node:crypto");
const path = require("node:path");
const { Dealer } = require("zeromq");
const { Packr } = require("msgpackr");

const APP = "comlink_ipc_v4";
const packr = new Packr({ useRecords: false, int64AsType: "auto" });

function envelope(type, fields = {}) {
  return { app: APP, id: crypto.randomUUID(), type, timestamp: Date.now() / 1000, ...fields };
}

async function main() {
  const socket = new Dealer({ linger: 0 });
  await socket.bind("tcp://127.0.0.1:*");
  const port = socket.lastEndpoint.split(":").pop();
  const worker = spawn(process.env.PYTHON ?? "python3", [path.join(__dirname, "python_worker.py")], {
    env: { ...process.env, COMLINK_ZMQ_PORT: port, COMLINK_WORKER_MODE: "1" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise((resolve) => worker.on("exit", resolve));
  // Rejects when the worker fails to start or exits before we ask it to; every call races it,
  // so that nothing waits for a worker that is gone.
  let stopping = false;
  const gone = new Promise((_, reject) => {
    worker.on("error", (err) => reject(new Error(`cannot start the Python worker: ${err.message}`)));
    worker.on("exit", (code, signal) => {
      if (!stopping) reject(new Error(`the Python worker exited (${signal ?? `code ${code}`}) before answering`));
    });
  });
  gone.catch(() => {}); // awaited only through Promise.race below

  const pending = new Map(); // call id -> settle(reply)
  const receiving = (async () => {
    for await (const frames of socket) {
      const message = packr.unpack(frames[frames.length - 1]);
      if (message.type === "stdout" || message.type === "stderr") {
        console.log(`[python ${message.type}] ${message.output.trimEnd()}`);
      } else if (pending.has(message.id)) {
        pending.get(message.id)(message);
        pending.delete(message.id);
      }
    }
  })().catch(() => {}); // ends when the socket is closed

  // Sends wait until the worker has connected (a DEALER queues nothing without a peer).
  async function call(name, ...args) {
    const message = envelope("call", { function: name, args, namespace: "default" });
    const reply = new Promise((resolve) => pending.set(message.id, resolve));
    const answer = await Promise.race([socket.send(["", packr.pack(message)]).then(() => reply), gone]);
    if (answer.type === "error") throw new Error(answer.error.split("\n")[0]); // Python adds a traceback
    return answer.result;
  }

  await call("hello");
  console.log(`add(2, 3) = ${await call("add", 2, 3)}`);
  console.log(`greet("Grace") = ${JSON.stringify(await call("greet", "Grace"))}`);
  console.log(`stats([1, 2, 3, 4]) = ${JSON.stringify(await call("stats", [1, 2, 3, 4]))}`);
  try {
    await call("fail");
  } catch (err) {
    console.log(`fail: ${err.message}`);
  }
  stopping = true;
  await socket.send(["", packr.pack(envelope("shutdown"))]);
  console.log(`worker exited with code ${await exited}`);
  socket.close();
  await receiving;
}

main().catch((err) => {
  console.error(`node_parent.js: ${err.message}`);
  process.exit(1);
});
