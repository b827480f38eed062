import assert from "node:assert/strict";
import { test } from "node:test";

import { ArmorPskError, armorFetch, sign, VERSION } from "../dist/index.js";

const keyId = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const secret = "apsk_test-secret";
const base = { keyId, secret, method: "GET", path: "/me" };

test("defaults are a random hex nonce and the current time", async () => {
  const before = Math.floor(Date.now() / 1000);
  const a = await sign(base);
  const b = await sign(base);
  const m = /^ARMOR-PSK ([^:]+):[A-Za-z0-9+/]{86}==:([0-9a-f]{32}):([0-9]+)$/.exec(a);
  assert.ok(m, a);
  assert.equal(m[1], keyId);
  const ts = Number(m[3]);
  assert.ok(ts >= before && ts <= Math.floor(Date.now() / 1000) + 1);
  assert.notEqual(a.split(":")[2], b.split(":")[2]);
});

const refusals = [
  ["an empty key id", { keyId: "" }, /key id is empty/],
  ["a non-ASCII key id", { keyId: "clé" }, /visible ASCII/],
  ["a key id with ':'", { keyId: "a:b" }, /':'/],
  ["a key id of 129 characters", { keyId: "k".repeat(129) }, /at most 128/],
  ["a nonce with ':'", { nonce: "a:b" }, /':'/],
  ["a nonce of 129 characters", { nonce: "n".repeat(129) }, /at most 128/],
  ["an empty nonce", { nonce: "" }, /nonce is empty/],
  ["an empty secret", { secret: "" }, /secret key is missing/],
  ["a path without '/'", { path: "me" }, /path must/],
  ["a path with a space", { path: "/users/jane doe" }, /percent-encoded/],
  ["a method with a space", { method: "GE T" }, /method/],
  ["a negative timestamp", { timestamp: -1 }, /timestamp/],
  ["a fractional timestamp", { timestamp: 1.5 }, /timestamp/],
];
for (const [what, change, why] of refusals) {
  test(`sign refuses ${what}`, async () => {
    await assert.rejects(sign({ ...base, ...change }), (e) => {
      assert.ok(e instanceof ArmorPskError, String(e));
      assert.match(e.message, why);
      assert.ok(!e.message.includes(secret));
      return true;
    });
  });
}

test("a nonce of 128 characters is accepted", async () => {
  assert.ok(await sign({ ...base, nonce: "n".repeat(128), timestamp: 1 }));
});

test("armorFetch refuses missing credentials when it is made", () => {
  assert.throws(() => armorFetch({ keyId: "", secret }), /no keyId/);
  assert.throws(() => armorFetch({ keyId, secret: undefined }), /no secret/);
  assert.throws(() => armorFetch({ keyId: "clé", secret }), /visible ASCII/);
});

test("armorFetch signs the method, the path as sent and the body bytes", async () => {
  const seen = [];
  const f = armorFetch({
    keyId, secret,
    fetch: async (req) => { seen.push(req); return new Response("{}"); },
  });
  await f("http://127.0.0.1:1/a b/é?q=é x#frag", { method: "POST", body: "Zoë" });
  const req = seen[0];
  const [, , nonce, ts] = req.headers.get("authorization").split(":");
  const want = await sign({
    keyId, secret, method: "POST", path: "/a%20b/%C3%A9", body: "Zoë", nonce, timestamp: Number(ts),
  });
  assert.equal(req.headers.get("authorization"), want);
  assert.equal(await req.text(), "Zoë");
});

test("armorFetch refuses a streamed body before sending", async () => {
  let sent = false;
  const f = armorFetch({ keyId, secret, fetch: async () => { sent = true; return new Response(); } });
  const stream = new ReadableStream({ start(c) { c.enqueue(new Uint8Array([1])); c.close(); } });
  await assert.rejects(f("http://127.0.0.1:1/x", { method: "POST", body: stream, duplex: "half" }),
    /streamed body cannot be signed/);
  assert.equal(sent, false);
});

test("the version is the workspace's", async () => {
  const { readFileSync } = await import("node:fs");
  const cargo = readFileSync(new URL("../../../Cargo.toml", import.meta.url), "utf8");
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.match(cargo, new RegExp(`^version = "${VERSION}"$`, "m"));
  assert.equal(pkg.version, VERSION);
});
