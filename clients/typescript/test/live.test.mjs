// Against a real `armor serve` (started by clients/live-env.sh).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { armorFetch, sign } from "../dist/index.js";

const url = process.env.ARMOR_TEST_URL;
const keyId = process.env.ARMOR_TEST_KEY_ID;
const secret = process.env.ARMOR_TEST_SECRET_KEY;
const ready = Boolean(url && keyId && secret);
if (!ready && process.env.ARMOR_TEST_REQUIRE_LIVE) {
  throw new Error("ARMOR_TEST_REQUIRE_LIVE is set but ARMOR_TEST_URL/KEY_ID/SECRET_KEY are not");
}
const live = { skip: ready ? false : "no live server: run the tests through clients/live-env.sh" };

/** armorFetch that also records the Authorization values it sent. */
function recording(options = {}) {
  const sent = [];
  const f = armorFetch({
    keyId, secret, ...options,
    fetch: (req) => { sent.push(req.headers.get("authorization")); return fetch(req); },
  });
  return { f, sent };
}

test("GET /me with a key", live, async () => {
  const { f } = recording();
  const r = await f(`${url}/me`);
  assert.equal(r.status, 200, await r.clone().text());
  assert.ok((await r.json()).accounts[0].id >= 1);
});

test("POST with a UTF-8 JSON body", live, async () => {
  const { f } = recording();
  const body = JSON.stringify({ note: "Zoë Ångström – 東京", n: 1 });
  const r = await f(`${url}/auth/whoami`, {
    method: "POST", body, headers: { "Content-Type": "application/json" },
  });
  assert.equal(r.status, 200, await r.clone().text());
  const who = await r.json();
  const bytes = Buffer.from(body, "utf8");
  assert.equal(who.credential, "ARMOR-PSK");
  assert.equal(who.keyId, keyId);
  assert.equal(who.bodyLength, bytes.length);
  assert.equal(who.bodySha256, createHash("sha256").update(bytes).digest("hex"));
});

for (const signQuery of [false, true]) {
  test(`a path with a query (signQuery ${signQuery})`, live, async () => {
    const { f } = recording({ signQuery });
    const r = await f(`${url}/accounts?$top=10&q=é x`);
    assert.equal(r.status, 200, await r.clone().text());
  });
}

test("a replayed header is refused as nonce_reused", live, async () => {
  const { f, sent } = recording();
  const r = await f(`${url}/me`);
  assert.equal(r.status, 200);
  const again = await fetch(`${url}/me`, { headers: { Authorization: sent[0] } });
  assert.equal(again.status, 401);
  assert.equal((await again.json()).error, "nonce_reused");
});

test("sign() with fetch directly, and a wrong secret refused as invalid_signature", live, async () => {
  const ok = await fetch(`${url}/me`, {
    headers: { Authorization: await sign({ keyId, secret, method: "GET", path: "/me" }) },
  });
  assert.equal(ok.status, 200);
  const f = armorFetch({ keyId, secret: `${secret}x` });
  const bad = await f(`${url}/me`);
  assert.equal(bad.status, 401);
  assert.equal((await bad.json()).error, "invalid_signature");
});

test("concurrent requests each get their own nonce", live, async () => {
  const { f } = recording();
  const rs = await Promise.all(Array.from({ length: 8 }, () => f(`${url}/me`)));
  assert.deepEqual(rs.map((r) => r.status), Array(8).fill(200));
});
