#!/usr/bin/env node
"use strict";
// Node.js Multifrost v4 peer for the interop tests (see README.md in this folder).
//
//   node peer.js [child] [--worker]              spawn-mode child (needs COMLINK_ZMQ_PORT)
//   node peer.js serve --service-id ID [--port N] connect-mode child, registered in the registry
//   node peer.js parent --scenario JSON | --scenario-file PATH|-
//
// With no mode argument the peer is a spawn-mode child, because the JavaScript parent starts
// `executable script` with no extra arguments. Unknown arguments (e.g. --worker) are ignored.

const fs = require("node:fs");

function option(argv, name) {
  const at = argv.indexOf(name);
  return at >= 0 && at + 1 < argv.length ? argv[at + 1] : undefined;
}

function readScenario(argv) {
  const inline = option(argv, "--scenario");
  if (inline !== undefined) return JSON.parse(inline);
  const file = option(argv, "--scenario-file");
  if (file !== undefined) return JSON.parse(fs.readFileSync(file === "-" ? 0 : file, "utf8"));
  throw new Error("parent needs --scenario JSON or --scenario-file PATH");
}

async function main(argv) {
  const mode = ["child", "serve", "parent"].includes(argv[0]) ? argv[0] : "child";
  const child = require("./child");
  if (mode === "child") return child.runSpawnChild();
  if (mode === "serve") return child.runServiceChild(option(argv, "--service-id"), Number(option(argv, "--port") ?? 0));
  let scenario;
  try {
    scenario = readScenario(argv);
  } catch (err) {
    child.fatal(`bad scenario: ${err.message}`);
  }
  return require("./parent").runParent(scenario);
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`FATAL: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
