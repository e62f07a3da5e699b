"use strict";
// The parent role of the Node interop peer: a DEALER that spawns a child the way the
// JavaScript implementation does (`sh -c "<executable> <script>"`, no --worker argument) or
// connects to a registered service, runs a JSON scenario, and prints one JSON line per event
// on stdout. See README.md in this folder for the scenario format.

const { spawn } = require("node:child_process");
const { Dealer } = require("zeromq");
const registry = require("./registry");
const wire = require("./wire");

function emit(event, fields) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

// Replace every string "$i" inside tagged args by the call's index (for count > 1).
function substituteIndex(value, index) {
  if (value === "$i") return index;
  if (Array.isArray(value)) return value.map((v) => substituteIndex(v, index));
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) out[key] = substituteIndex(value[key], index);
    return out;
  }
  return value;
}

class Parent {
  constructor(scenario) {
    this.scenario = scenario;
    this.rawFloats = Boolean(scenario.raw_floats);
    this.socket = new Dealer({ linger: 0 });
    this.queue = new wire.SendQueue(this.socket, (err) => emit("send_failed", { error: err.message }));
    this.pending = new Map(); // id -> settle(outcome)
    this.outputs = 0;
    this.outputWaiters = [];
    this.child = null;
    this.childExit = null;
    this.exitWaiters = [];
    this.strangers = new wire.Strangers(); // unknown types/keys received (reported with "done")
  }

  // ---- connection -------------------------------------------------------------------------
  async start() {
    const startTimeout = this.scenario.start_timeout_ms ?? 10000;
    const handshake = new Promise((resolve) => this.socket.events.on("handshake", resolve));
    if (this.scenario.spawn) {
      await this.socket.bind("tcp://127.0.0.1:*");
      const port = Number(this.socket.lastEndpoint.split(":").pop());
      this.spawnChild(port);
      emit("started", { mode: "spawn", port, pid: this.child.pid });
    } else if (this.scenario.connect) {
      const { service_id: serviceId, timeout_ms: timeoutMs = 5000 } = this.scenario.connect;
      const port = await registry.discover(serviceId, timeoutMs);
      this.socket.connect(`tcp://localhost:${port}`);
      emit("started", { mode: "connect", port, service_id: serviceId });
    } else {
      throw new Error("scenario needs 'spawn' or 'connect'");
    }
    this.receiveLoop();
    const connected = await Promise.race([handshake.then(() => true), delay(startTimeout, false), this.exited().then(() => false)]);
    if (!connected) throw new Error(`no peer connected within ${startTimeout} ms`);
  }

  spawnChild(port) {
    const { executable, script, env = {} } = this.scenario.spawn;
    this.child = spawn("sh", ["-c", `${executable} ${script}`], {
      env: { ...process.env, ...env, COMLINK_ZMQ_PORT: String(port), COMLINK_WORKER_MODE: "1" },
      stdio: ["ignore", process.stderr, process.stderr],
      detached: true,
    });
    this.child.on("exit", (code, signal) => {
      this.childExit = { code, signal };
      emit("child_exit", this.childExit);
      for (const settle of this.pending.values()) settle({ ok: false, kind: "child_exited", error: "child process exited" });
      this.pending.clear();
      for (const wake of this.exitWaiters.splice(0)) wake();
    });
  }

  exited() {
    if (this.child === null) return new Promise(() => {});
    if (this.childExit !== null) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  async receiveLoop() {
    for await (const frames of this.socket) {
      let message;
      try {
        message = wire.unpack(frames[frames.length - 1], { rawFloats: this.rawFloats });
      } catch (err) {
        emit("dropped", { reason: err.message });
        continue;
      }
      this.strangers.note(message);
      const settle = this.pending.get(message.id);
      if (message.type === "stdout" || message.type === "stderr") {
        emit("output", { stream: message.type, output: message.output });
        this.outputs += 1;
        this.outputWaiters = this.outputWaiters.filter(([count, wake]) => (this.outputs >= count ? (wake(), false) : true));
      } else if (settle && message.type === "response") {
        settle({ ok: true, result: message.result ?? null, has_result: Object.hasOwn(message, "result") });
      } else if (settle && message.type === "error") {
        settle({ ok: false, kind: "error", error: message.error });
      } else if (settle && message.type === "heartbeat") {
        settle({ ok: true, metadata: message.metadata ?? null });
      } else {
        emit("ignored", { type: message.type, id: message.id ?? null });
      }
    }
  }

  send(message) {
    this.queue.send([Buffer.alloc(0), wire.pack(message, { rawFloats: this.rawFloats })]);
  }

  // Sends `message` and waits for the reply carrying its id (or a timeout).
  request(message, timeoutMs) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(message.id);
        resolve({ ok: false, kind: "timeout", error: `no reply within ${timeoutMs} ms` });
      }, timeoutMs);
      const settle = (outcome) => {
        clearTimeout(timer);
        this.pending.delete(message.id);
        resolve(outcome);
      };
      if (this.childExit !== null) return settle({ ok: false, kind: "child_exited", error: "child process exited" });
      this.pending.set(message.id, settle);
      try {
        this.send(message);
      } catch (err) {
        settle({ ok: false, kind: "encode", error: err.message });
      }
    });
  }

  // ---- steps ------------------------------------------------------------------------------
  async runStep(step, stepIndex) {
    if (step.call !== undefined) return this.callStep(step, stepIndex);
    if (step.heartbeat !== undefined) return this.heartbeatStep(step, stepIndex);
    if (step.send !== undefined) return this.send(wire.fromTagged(step.send));
    if (step.send_b64 !== undefined) return this.queue.send([Buffer.alloc(0), Buffer.from(step.send_b64, "base64")]);
    if (step.wait_output !== undefined) return this.waitOutputStep(step, stepIndex);
    if (step.wait_exit !== undefined) return this.waitExitStep(step, stepIndex);
    throw new Error(`unknown step ${JSON.stringify(step)}`);
  }

  async callStep(step, stepIndex) {
    const count = step.count ?? 1;
    const timeoutMs = step.timeout_ms ?? 5000;
    const calls = [];
    for (let index = 0; index < count; index += 1) {
      const args = wire.fromTagged(substituteIndex(step.args ?? [], index));
      const fields = { function: step.call, args, namespace: step.namespace ?? wire.DEFAULT_NAMESPACE };
      fields.clientName = this.scenario.client_name ?? "node-interop-peer";
      const started = performance.now();
      calls.push(this.request(wire.envelope("call", fields), timeoutMs).then((outcome) => {
        const line = { step: stepIndex, index, function: step.call, elapsed_ms: performance.now() - started, ...outcome };
        if (outcome.ok) line.result = wire.toTagged(outcome.result);
        emit("result", line);
      }));
    }
    await Promise.all(calls);
  }

  async heartbeatStep(step, stepIndex) {
    for (let index = 0; index < step.heartbeat; index += 1) {
      const hbTimestamp = Date.now() / 1000;
      const outcome = await this.request(wire.envelope("heartbeat", { metadata: { hb_timestamp: hbTimestamp } }), step.timeout_ms ?? 1000);
      const line = { step: stepIndex, index, ok: outcome.ok };
      if (outcome.ok) {
        const metadata = outcome.metadata ?? {};
        line.rtt_ms = (Date.now() / 1000 - metadata.hb_timestamp) * 1000;
        line.hb_timestamp_matches = metadata.hb_timestamp === hbTimestamp;
        line.hb_response = metadata.hb_response ?? null;
      } else {
        Object.assign(line, { kind: outcome.kind, error: outcome.error });
      }
      emit("heartbeat", line);
    }
  }

  async waitOutputStep(step, stepIndex) {
    const reached = this.outputs >= step.wait_output
      || await Promise.race([new Promise((wake) => this.outputWaiters.push([step.wait_output, () => wake(true)])), delay(step.timeout_ms ?? 5000, false)]);
    emit("waited", { step: stepIndex, ok: reached, outputs: this.outputs });
  }

  async waitExitStep(step, stepIndex) {
    const exited = await Promise.race([this.exited().then(() => true), delay(step.timeout_ms ?? 5000, false)]);
    emit("waited", { step: stepIndex, ok: exited, child_exit: this.childExit });
  }

  // ---- teardown ---------------------------------------------------------------------------
  async stop() {
    const shutdown = this.scenario.shutdown ?? Boolean(this.scenario.spawn);
    if (shutdown && this.childExit === null) this.send(wire.envelope("shutdown"));
    if (this.child !== null && this.childExit === null) {
      const exited = await Promise.race([this.exited().then(() => true), delay(this.scenario.exit_wait_ms ?? 3000, false)]);
      if (!exited) {
        // "group" also reaches a grandchild that sh did not exec; "shell" signals only sh,
        // as the JavaScript implementation does.
        const target = this.scenario.kill === "shell" ? this.child.pid : -this.child.pid;
        emit("killing", { target });
        try {
          process.kill(target, "SIGKILL");
        } catch (err) {
          emit("kill_failed", { error: err.message });
        }
        await this.exited();
      }
    }
    this.socket.close();
  }
}

function delay(ms, value) {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}

async function runParent(scenario) {
  const parent = new Parent(scenario);
  try {
    await parent.start();
    for (const [index, step] of (scenario.steps ?? []).entries()) await parent.runStep(step, index);
  } catch (err) {
    emit("fatal", { error: err.message });
    process.exitCode = 1;
  }
  await parent.stop();
  emit("done", { child_exit: parent.childExit, unknown: parent.strangers.list() });
  process.exit(process.exitCode ?? 0);
}

module.exports = { runParent };
