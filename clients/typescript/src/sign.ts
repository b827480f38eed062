// The ARMOR-PSK signature with WebCrypto (no runtime dependencies).

/** The header's scheme word. */
export const SCHEME = "ARMOR-PSK";

/** Key ids and nonces are 1 to this many visible ASCII characters. */
export const MAX_FIELD_LENGTH = 128;

/** A request body as it is signed: a string is taken as UTF-8. */
export type Body = string | Uint8Array | ArrayBuffer;

/**
 * A request cannot be signed or sent signed. Thrown before anything is sent;
 * the message names the value and the rule, never the secret.
 */
export class ArmorPskError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ArmorPskError";
  }
}

/** What `sign()` needs for one request. */
export interface SignInput {
  /** The Key ID. */
  keyId: string;
  /** The Secret Key (`apsk_...`), used as its UTF-8 bytes. */
  secret: string;
  /** The method exactly as on the request line (`GET`, `POST`, ...). */
  method: string;
  /** The request target as sent: percent-encoded, starting with `/`. */
  path: string;
  /** The exact body bytes sent; empty by default. */
  body?: Body;
  /** Default: 128 random bits as 32 lowercase hex digits. */
  nonce?: string;
  /** Unix seconds; default now. */
  timestamp?: number;
  /** Sign `path?query` instead of the path alone (the vendor form). */
  signQuery?: boolean;
}

const encoder = new TextEncoder();

/** Throws unless `value` is 1-128 visible ASCII characters without `:`. */
export function checkField(what: string, value: unknown): string {
  if (typeof value !== "string") {
    throw new ArmorPskError(`${what} must be a string, not ${typeof value}`);
  }
  if (value.length === 0) throw new ArmorPskError(`${what} is empty`);
  if (value.length > MAX_FIELD_LENGTH) {
    throw new ArmorPskError(
      `${what} is ${value.length} characters long; at most ${MAX_FIELD_LENGTH} are allowed`,
    );
  }
  for (const ch of value) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 0x21 || c > 0x7e) {
      throw new ArmorPskError(
        `${what} may hold only visible ASCII characters (0x21-0x7E), found ${JSON.stringify(ch)}`,
      );
    }
  }
  if (value.includes(":")) {
    throw new ArmorPskError(`${what} may not contain ':' (it separates the header's fields)`);
  }
  return value;
}

function checkMethod(method: unknown): string {
  if (typeof method !== "string" || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(method)) {
    throw new ArmorPskError(`method ${JSON.stringify(method)} is not an HTTP method token`);
  }
  return method;
}

function checkPath(path: unknown): string {
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new ArmorPskError("path must be a string starting with '/', as on the request line");
  }
  const bad = /[^\x21-\x7e]/u.exec(path);
  if (bad) {
    throw new ArmorPskError(
      `path holds ${JSON.stringify(bad[0])}: give it percent-encoded, exactly as it is sent`,
    );
  }
  return path;
}

function bodyBytes(body: unknown): Uint8Array {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === "string") return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new ArmorPskError("body must be a string, Uint8Array or ArrayBuffer");
}

let cryptoPromise: Promise<Crypto> | undefined;

/** WebCrypto: `globalThis.crypto`, else Node 18's `node:crypto` webcrypto. */
export function webCrypto(): Promise<Crypto> {
  cryptoPromise ??= (async () => {
    const global = (globalThis as { crypto?: Crypto }).crypto;
    if (global?.subtle) return global;
    // Node 18 without --experimental-global-webcrypto. The specifier is a
    // variable so that bundlers for browsers leave it alone.
    const specifier = "node:crypto";
    const mod = (await import(/* webpackIgnore: true */ /* @vite-ignore */ specifier)) as {
      webcrypto?: Crypto;
    };
    if (!mod.webcrypto?.subtle) throw new ArmorPskError("no WebCrypto (crypto.subtle) here");
    return mod.webcrypto;
  })();
  return cryptoPromise;
}

/** A fresh random nonce: 128 bits as 32 lowercase hex digits. */
export async function newNonce(): Promise<string> {
  const bytes = (await webCrypto()).getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The HMAC-SHA512 key for a secret, non-extractable: import it once and sign
 * many requests with `signWithKey`.
 */
export async function importSecret(secret: string): Promise<CryptoKey> {
  if (typeof secret !== "string" || secret.length === 0) {
    throw new ArmorPskError("the secret key is missing or empty");
  }
  const { subtle } = await webCrypto();
  return subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-512" }, false, [
    "sign",
  ]);
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** `sign()` with an already imported key (see `importSecret`). */
export async function signWithKey(
  key: CryptoKey,
  input: Omit<SignInput, "secret">,
): Promise<string> {
  const keyId = checkField("key id", input.keyId);
  const method = checkMethod(input.method);
  const path = checkPath(input.path);
  const nonce = input.nonce === undefined ? await newNonce() : checkField("nonce", input.nonce);
  const timestamp = input.timestamp ?? Math.floor(Date.now() / 1000);
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new ArmorPskError("timestamp must be a non-negative integer (Unix seconds)");
  }
  const signedPath = input.signQuery ? path : path.split("?", 1)[0]!;
  const ts = String(timestamp);
  const head = encoder.encode(keyId + method + signedPath + nonce + ts);
  const body = bodyBytes(input.body);
  const message = new Uint8Array(head.length + body.length);
  message.set(head, 0);
  message.set(body, head.length);
  const { subtle } = await webCrypto();
  const mac = new Uint8Array(await subtle.sign("HMAC", key, message));
  return `${SCHEME} ${keyId}:${toBase64(mac)}:${nonce}:${ts}`;
}

/**
 * The whole `Authorization` value for one request:
 * `ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{timestamp}`.
 */
export async function sign(input: SignInput): Promise<string> {
  checkField("key id", input.keyId);
  return signWithKey(await importSecret(input.secret), input);
}
