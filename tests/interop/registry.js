"use strict";
// The shared service registry (~/.multifrost/services.json, or $MULTIFROST_REGISTRY).
// Writers hold both kinds of lock used in the field: the Python one (file `services.lock`,
// O_CREAT|O_EXCL) and then the JavaScript one (directory `services.json.lock`, mkdir).
// Either lock is stale after 10 s (by mtime) and waiting gives up after 10 s.

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const STALE_MS = 10_000;
const WAIT_MS = 10_000;
const RETRY_MS = 25;

function registryPath() {
  return process.env.MULTIFROST_REGISTRY || path.join(os.homedir(), ".multifrost", "services.json");
}

function lockPaths(file) {
  const parsed = path.parse(file);
  return {
    pythonLock: path.join(parsed.dir, `${parsed.name}.lock`),
    jsLock: `${file}.lock`,
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function removeIfStale(lockPath, remove) {
  try {
    if (Date.now() - fs.statSync(lockPath).mtimeMs > STALE_MS) remove(lockPath);
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
}

async function acquire(lockPath, create, remove) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      create(lockPath);
      return;
    } catch (err) {
      if (err.code !== "EEXIST") throw err;
    }
    removeIfStale(lockPath, remove);
    if (Date.now() > deadline) throw new Error(`registry lock ${lockPath} is held (gave up after ${WAIT_MS} ms)`);
    await sleep(RETRY_MS);
  }
}

const pythonLockOps = [(p) => fs.closeSync(fs.openSync(p, "wx")), (p) => fs.rmSync(p, { force: true })];
const jsLockOps = [(p) => fs.mkdirSync(p), (p) => fs.rmSync(p, { recursive: true, force: true })];

async function withRegistry(change) {
  const file = registryPath();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const { pythonLock, jsLock } = lockPaths(file);
  await acquire(pythonLock, ...pythonLockOps);
  try {
    await acquire(jsLock, ...jsLockOps);
    try {
      const services = readServices(file);
      if (change(services)) {
        const tmp = `${file}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, JSON.stringify(services, null, 2));
        fs.renameSync(tmp, file);
      }
    } finally {
      jsLockOps[1](jsLock);
    }
  } finally {
    pythonLockOps[1](pythonLock);
  }
}

function readServices(file = registryPath()) {
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if (err.code === "ENOENT") return {};
    throw err;
  }
  try {
    const parsed = JSON.parse(text);
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === "EPERM";
  }
}

async function register(serviceId, port) {
  await withRegistry((services) => {
    const existing = services[serviceId];
    if (existing && Number.isInteger(existing.pid) && existing.pid !== process.pid && pidAlive(existing.pid)) {
      throw new Error(`service '${serviceId}' is already registered by live pid ${existing.pid}`);
    }
    services[serviceId] = { port, pid: process.pid, started: new Date().toISOString() };
    return true;
  });
}

async function unregister(serviceId) {
  await withRegistry((services) => {
    if (services[serviceId]?.pid !== process.pid) return false;
    delete services[serviceId];
    return true;
  });
}

async function discover(serviceId, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const entry = readServices()[serviceId];
    if (entry && Number.isInteger(entry.port)) return entry.port;
    if (Date.now() >= deadline) throw new Error(`service '${serviceId}' not found in ${registryPath()} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

module.exports = { register, unregister, discover, registryPath };
