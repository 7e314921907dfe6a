// Streams from Node.js with @grpc/grpc-js: what a grain publishes reaches a Streams/Subscribe
// call, and a new Subscribe from the last token received loses nothing published while
// disconnected.
//
//   GRAINERY_TARGET=127.0.0.1:7070 node --test streams_test.mjs
//
// The silo must host tests/grains/stream_probes.py (grain type Publisher);
// tests/integration/test_node_streams.py starts one and runs this file.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { deadline, target, v1 } from "./grainery.mjs";

let gateway;
let streams;
const key = `node-${randomUUID()}`;

before(() => {
  const credentials = grpc.credentials.createInsecure();
  gateway = new v1.Gateway(target, credentials);
  streams = new v1.Streams(target, credentials);
});

after(() => {
  gateway.close();
  streams.close();
});

// A grain publishes: Publisher.publish(namespace, key, event) returns the token.
function grainPublishes(event) {
  return new Promise((resolve, reject) => {
    const request = {
      grain_type: "Publisher",
      grain_key: "node",
      method: "publish",
      args_json: JSON.stringify(["news", key, event]),
    };
    gateway.Invoke(request, new grpc.Metadata(), { deadline: deadline() }, (error, reply) =>
      error ? reject(error) : resolve(JSON.parse(reply.result_json)),
    );
  });
}

// Subscribe from `fromToken` and collect `count` events, then cancel the call.
function collect(fromToken, count) {
  const call = streams.Subscribe({ namespace: "news", key, from_token: fromToken });
  const events = [];
  const done = new Promise((resolve, reject) => {
    call.on("data", (message) => {
      events.push([message.token, JSON.parse(message.event_json)]);
      if (events.length === count) {
        call.cancel();
        resolve(events);
      }
    });
    call.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`only ${events.length} of ${count} events`)), 20_000).unref(),
  );
  return { call, events: Promise.race([done, timeout]) };
}

test("Streams/Subscribe receives what a grain publishes, and resumes from a token", async () => {
  const first = await grainPublishes({ n: 0 });
  const live = collect(first, 2);
  const second = await grainPublishes({ n: 1 });
  const third = await grainPublishes({ n: 2 });
  assert.deepEqual(await live.events, [
    [second, { n: 1 }],
    [third, { n: 2 }],
  ]);

  // Disconnected: two more are published; reconnecting from the last token gets exactly them.
  const fourth = await grainPublishes({ n: 3 });
  const fifth = await grainPublishes({ n: 4 });
  const resumed = collect(third, 2);
  assert.deepEqual(await resumed.events, [
    [fourth, { n: 3 }],
    [fifth, { n: 4 }],
  ]);
});

test("Streams/Publish answers a token; bad JSON is INVALID_ARGUMENT", async () => {
  const token = await new Promise((resolve, reject) => {
    streams.Publish({ namespace: "news", key, event_json: '{"from": "node"}' },
      new grpc.Metadata(), { deadline: deadline() },
      (error, reply) => (error ? reject(error) : resolve(reply.token)));
  });
  assert.match(token, /^\d+-\d+$/);
  await assert.rejects(
    new Promise((resolve, reject) => {
      streams.Publish({ namespace: "news", key, event_json: "{nope" }, new grpc.Metadata(),
        { deadline: deadline() }, (error, reply) => (error ? reject(error) : resolve(reply)));
    }),
    (error) => {
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
      assert.deepEqual(error.metadata.get("grainery-error"), ["invalid_arguments"]);
      return true;
    },
  );
});
