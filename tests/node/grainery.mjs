// What the Node.js tests share: protos/grainery/v1/grainery.proto loaded exactly as it is in
// the repository, the silo to call (GRAINERY_TARGET=host:port) and call deadlines.
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "..", "..", "protos");

export const target = process.env.GRAINERY_TARGET;
if (!target) {
  throw new Error("set GRAINERY_TARGET=host:port of a running silo");
}

const definition = protoLoader.loadSync("grainery/v1/grainery.proto", {
  includeDirs: [protoRoot],
  keepCase: true, // field names as in the .proto: grain_type, args_json, ...
  longs: String,
  defaults: true,
});
export const v1 = grpc.loadPackageDefinition(definition).grainery.v1;

export function deadline(seconds = 10) {
  return new Date(Date.now() + seconds * 1000);
}
