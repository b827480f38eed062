// A small Node service that calls another service through the armor gateway.
//
// The gateway (`armor serve --upstream http://127.0.0.1:9000`) verifies each
// signed request and forwards it to the upstream with X-Armor-User-Id,
// X-Armor-Account-Id, X-Armor-Key-Id and X-Armor-Permissions added; the
// upstream never sees the key or the signature. This service holds an API
// key of its own and signs every call with it.
//
//   ARMOR_GATEWAY=http://127.0.0.1:8080 ARMOR_KEY_ID=... ARMOR_SECRET_KEY=apsk_... \
//     node gateway-service.mjs
//   curl -X POST localhost:3000/orders -d '{"sku":"vm-large","qty":2}'
import http from "node:http";

import { armorFetch } from "armor-psk";

const gateway = process.env.ARMOR_GATEWAY ?? "http://127.0.0.1:8080";
const upstream = armorFetch({ keyId: process.env.ARMOR_KEY_ID, secret: process.env.ARMOR_SECRET_KEY });

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const server = http.createServer(async (req, res) => {
  if (!req.url.startsWith("/orders")) {
    res.writeHead(404).end();
    return;
  }
  try {
    // Pass /orders... on to the upstream through the gateway. The body is
    // read in full first: armorFetch signs bytes, not streams.
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : await readBody(req);
    const answer = await upstream(`${gateway}${req.url}`, {
      method: req.method,
      headers: { "Content-Type": "application/json" },
      body,
    });
    res.writeHead(answer.status, { "Content-Type": answer.headers.get("content-type") ?? "application/json" });
    res.end(Buffer.from(await answer.arrayBuffer()));
  } catch (err) {
    res.writeHead(502, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ error: "gateway_call_failed", detail: String(err.message ?? err) }));
  }
});
server.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}, calling ${gateway}`);
});
