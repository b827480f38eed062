import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { sign } from "../dist/index.js";

const file = process.env.ARMOR_VECTORS ?? new URL("../../../testdata/vectors.json", import.meta.url);
const vectors = JSON.parse(readFileSync(file, "utf8")).signing;

test("the vectors file has signing vectors", () => {
  assert.ok(vectors.length >= 17);
});

for (const v of vectors) {
  const input = {
    keyId: v.keyId,
    secret: v.secretKey,
    method: v.method,
    path: v.requestPath,
    nonce: v.nonce,
    timestamp: v.timestamp,
    signQuery: v.requestPath.includes("?"),
  };
  test(`sign reproduces vector ${v.name} (string body)`, async () => {
    assert.equal(await sign({ ...input, body: v.body }), v.authorization);
  });
  test(`sign reproduces vector ${v.name} (Uint8Array and ArrayBuffer body)`, async () => {
    const bytes = new TextEncoder().encode(v.body);
    assert.equal(await sign({ ...input, body: bytes }), v.authorization);
    assert.equal(await sign({ ...input, body: bytes.slice().buffer }), v.authorization);
  });
}

test("the vendor form leaves the query out of the signature", async () => {
  const v = vectors.find((x) => x.name === "get-query-vendor-form");
  const got = await sign({
    keyId: v.keyId, secret: v.secretKey, method: "GET", path: `${v.requestPath}?$top=10&x=1`,
    nonce: v.nonce, timestamp: v.timestamp,
  });
  assert.equal(got, v.authorization);
});
