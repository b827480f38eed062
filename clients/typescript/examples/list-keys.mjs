// Who am I, in which accounts, and (with a password login) which API keys.
//
//   ARMOR_KEY_ID=... ARMOR_SECRET_KEY=apsk_... node list-keys.mjs https://armor.example.com
//
// Listing keys (GET /users/{id}/keys) is a password caller's route: an API
// key gets 403 api_key_not_allowed there, by design. So that part signs in
// with FH-AUTH when ARMOR_EMAIL and ARMOR_PASSWORD are set.
import { armorFetch } from "armor-psk";

const base = (process.argv[2] ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const api = armorFetch({ keyId: process.env.ARMOR_KEY_ID, secret: process.env.ARMOR_SECRET_KEY });

async function json(response) {
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.json();
}

const me = await json(await api(`${base}/me`));
console.log(`signed in as ${me.user.username} (user ${me.user.links.userId})`);
for (const a of await json(await api(`${base}/accounts`))) {
  console.log(`  account ${a.id}: ${a.name} (${a.status})`);
}

if (process.env.ARMOR_EMAIL && process.env.ARMOR_PASSWORD) {
  const post = (path, body, headers = {}) =>
    fetch(`${base}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
  const login = { username: process.env.ARMOR_EMAIL, password: process.env.ARMOR_PASSWORD };
  const { code } = await json(await post("/auth/authorize", login));
  const grant = { code, grant_type: "authorization_code" };
  const { access_token: token } = await json(await post("/auth/token", grant));
  const auth = { Authorization: `FH-AUTH ${token}` };
  const keys = await json(await fetch(`${base}/users/${me.user.links.userId}/keys`, { headers: auth }));
  for (const k of keys) console.log(`  key ${k.id} "${k.name}" ${k.keyStatus}, last used ${k.lastUsed}`);
  await post("/auth/logout", {}, auth);
}
