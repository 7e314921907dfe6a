// Calls a real Grainery silo from Node.js with @grpc/grpc-js, loading
// protos/grainery/v1/grainery.proto exactly as it is in the repository.
//
//   GRAINERY_TARGET=127.0.0.1:7070 node --test client_test.mjs
//
// The silo must host tests/grains/probes.py (grain types Recorder and Boom) and
// tests/grains/pipeline_context.py (Hop, which echoes the call context).
// tests/integration/test_node_client.py starts one and runs this file.
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { deadline, target, v1 } from "./grainery.mjs";

let gateway;
let directory;
const runId = randomUUID();

before(() => {
  const credentials = grpc.credentials.createInsecure();
  gateway = new v1.Gateway(target, credentials);
  directory = new v1.Directory(target, credentials);
});

after(() => {
  gateway.close();
  directory.close();
});

// Promise wrapper for a unary call; rejects with the grpc-js ServiceError.
function call(client, method, request, metadata = new grpc.Metadata()) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: deadline() }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

function invoke(grainType, key, method, args = []) {
  return call(gateway, "Invoke", {
    grain_type: grainType,
    grain_key: key,
    method,
    args_json: typeof args === "string" ? args : JSON.stringify(args),
  });
}

async function expectStatus(promise, code, kind) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.code, code, `expected ${grpc.status[code]}, got ${error.code}: ${error.details}`);
    // Silos name the error kind in the trailing metadata `grainery-error`.
    assert.deepEqual(error.metadata.get("grainery-error"), [kind]);
    return true;
  });
}

test("Gateway.Invoke runs a grain method and returns JSON", async () => {
  const key = `node-${runId}`;
  const first = await invoke("Recorder", key, "add", [5]);
  assert.equal(JSON.parse(first.result_json), 5);
  assert.ok(first.silo_id, "the response names the silo that ran the call");
  assert.ok(first.address.includes(":"));
  const second = await invoke("Recorder", key, "add", [2]);
  assert.equal(JSON.parse(second.result_json), 7);
  const read = await invoke("Recorder", key, "get");
  assert.equal(JSON.parse(read.result_json), 7);
});

test("structured arguments and results round-trip as JSON", async () => {
  const value = { text: "héllo ✓", list: [1, 2.5, null, true], nested: { a: [] } };
  const reply = await invoke("Boom", `node-${runId}`, "echo", [value, "two"]);
  assert.deepEqual(JSON.parse(reply.result_json), [value, "two"]);
});

test("Directory.Locate names the silo hosting an active grain", async () => {
  const key = `node-locate-${runId}`;
  const invoked = await invoke("Recorder", key, "add", [1]);
  const located = await call(directory, "Locate", { grain_type: "Recorder", grain_key: key });
  assert.equal(located.active, true);
  assert.equal(located.silo_id, invoked.silo_id);
  assert.equal(located.address, invoked.address);
});

test("Directory.Members lists the cluster", async () => {
  const members = await call(directory, "Members", {});
  assert.ok(members.cluster, "cluster name");
  assert.ok(Number(members.version) >= 1, "membership version");
  const active = members.members.filter((m) => m.state === "active");
  assert.equal(active.length, 1);
  assert.equal(active[0].address, target);
  assert.ok(active[0].incarnation);
});

test("unknown grain type is NOT_FOUND", async () => {
  await expectStatus(invoke("NoSuchGrain", "k", "ping"), grpc.status.NOT_FOUND, "unknown_grain_type");
});

test("unknown or private method is UNIMPLEMENTED", async () => {
  await expectStatus(invoke("Recorder", "k", "no_such_method"), grpc.status.UNIMPLEMENTED, "unknown_method");
  await expectStatus(invoke("Guarded", "k", "_private"), grpc.status.UNIMPLEMENTED, "unknown_method");
});

test("arguments that are not valid JSON are INVALID_ARGUMENT", async () => {
  await expectStatus(invoke("Recorder", "k", "add", "[1,"), grpc.status.INVALID_ARGUMENT, "invalid_arguments");
  await expectStatus(invoke("Recorder", "k", "add", '{"n": 1}'), grpc.status.INVALID_ARGUMENT, "invalid_arguments");
  await expectStatus(invoke("Recorder", "k", "add", [1, 2, 3]), grpc.status.INVALID_ARGUMENT, "invalid_arguments");
});

test("an exception raised by the grain is UNKNOWN with its type and message", async () => {
  await assert.rejects(invoke("Boom", `node-${runId}`, "explode", ["kaboom"]), (error) => {
    assert.equal(error.code, grpc.status.UNKNOWN);
    assert.match(error.details, /ValueError: kaboom/);
    assert.doesNotMatch(error.details, /Traceback/);
    assert.deepEqual(error.metadata.get("grainery-error"), ["application"]);
    assert.deepEqual(error.metadata.get("grainery-error-type"), ["ValueError"]);
    return true;
  });
});

test("grainery-ctx-<name> metadata reaches the grain as its call context", async () => {
  const metadata = new grpc.Metadata();
  metadata.set("grainery-ctx-tenant", "node-tenant");
  // The grain calls a second grain, which reports what it received: the context is
  // passed on, and the chain names the first grain.
  const first = `node-ctx-${runId}`;
  const second = `Hop/node-ctx2-${runId}`;
  const reply = await call(
    gateway, "Invoke",
    { grain_type: "Hop", grain_key: first, method: "go", args_json: JSON.stringify([[second]]) },
    metadata,
  );
  const [outer, inner] = JSON.parse(reply.result_json);
  assert.deepEqual(outer.values, { tenant: "node-tenant" });
  assert.deepEqual(inner.values, { tenant: "node-tenant" });
  assert.deepEqual(inner.chain, [`Hop/${first}`]);
});

test("a context value that breaks the bounds is INVALID_ARGUMENT invalid_context", async () => {
  const metadata = new grpc.Metadata();
  metadata.set("grainery-ctx-big", "x".repeat(5000));
  await expectStatus(
    call(gateway, "Invoke", { grain_type: "Hop", grain_key: "k", method: "context", args_json: "[]" }, metadata),
    grpc.status.INVALID_ARGUMENT, "invalid_context",
  );
});

// Tracing: a caller in any language joins its trace to the silo's spans by sending the W3C
// `traceparent` (and optionally `tracestate`) as gRPC metadata. Against a silo with tracing
// off the metadata is ignored; tests/integration/test_tracing.py runs this test alone
// against silos exporting to a receiver it started, with GRAINERY_TRACEPARENT set, and
// checks that the silo's span joined that trace under that parent.
test("a traceparent in the metadata joins the caller's trace", async () => {
  const traceparent =
    process.env.GRAINERY_TRACEPARENT ?? `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", traceparent);
  metadata.set("tracestate", "node=1");
  const key = process.env.GRAINERY_TRACE_KEY ?? `node-trace-${runId}`;
  const request = { grain_type: "Recorder", grain_key: key, method: "ping", args_json: "[]" };
  const reply = await call(gateway, "Invoke", request, metadata);
  assert.ok(reply.silo_id);
  // A malformed traceparent is dropped, never an error: tracing must not change whether a
  // call runs.
  const garbled = new grpc.Metadata();
  garbled.set("traceparent", "00-not-a-trace-context");
  const again = await call(gateway, "Invoke", request, garbled);
  assert.equal(again.silo_id, reply.silo_id);
});
