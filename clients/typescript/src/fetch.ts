// A `fetch` that signs every request with ARMOR-PSK.

import { ArmorPskError, checkField, importSecret, signWithKey } from "./sign.js";

/** `fetch`'s signature. */
export type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/** Options of `armorFetch`. */
export interface ArmorFetchOptions {
  /** The Key ID. */
  keyId: string;
  /** The Secret Key; imported once as a non-extractable WebCrypto key. */
  secret: string;
  /** The `fetch` to send with (default `globalThis.fetch`). */
  fetch?: FetchLike;
  /** Sign `path?query` instead of the path alone (the vendor form). */
  signQuery?: boolean;
}

function isStream(body: unknown): boolean {
  if (body === null || typeof body !== "object") return false;
  if (typeof ReadableStream !== "undefined" && body instanceof ReadableStream) return true;
  const b = body as { getReader?: unknown; pipe?: unknown; [Symbol.asyncIterator]?: unknown };
  return (
    typeof b.getReader === "function" ||
    typeof b.pipe === "function" ||
    typeof b[Symbol.asyncIterator] === "function"
  );
}

/**
 * Returns a function with `fetch`'s signature that signs each request: the
 * method as sent, the URL's path (and query with `signQuery`) as sent, and
 * the body bytes. A string, bytes, `Blob`, `FormData` or `URLSearchParams`
 * body is read in full first; a streamed body (`ReadableStream`, Node
 * stream, async iterable) is refused with an `ArmorPskError`, since its bytes
 * are not known before sending.
 */
export function armorFetch(options: ArmorFetchOptions): FetchLike {
  if (!options || !options.keyId) {
    throw new ArmorPskError(
      "armorFetch: no keyId (pass keyId and secret, e.g. from ARMOR_KEY_ID and ARMOR_SECRET_KEY)",
    );
  }
  if (!options.secret) {
    throw new ArmorPskError(
      "armorFetch: no secret (pass keyId and secret, e.g. from ARMOR_KEY_ID and ARMOR_SECRET_KEY)",
    );
  }
  const keyId = checkField("key id", options.keyId);
  const send: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const signQuery = options.signQuery ?? false;
  const key = importSecret(options.secret);
  // The returned promise may be awaited later; avoid an unhandled rejection now.
  key.catch(() => undefined);

  return async (input, init) => {
    if (init && isStream(init.body)) {
      throw new ArmorPskError(
        "a streamed body cannot be signed: pass a string, Uint8Array or ArrayBuffer",
      );
    }
    const request = new Request(input, init);
    const url = new URL(request.url);
    const body =
      request.body === null ? undefined : new Uint8Array(await request.clone().arrayBuffer());
    const authorization = await signWithKey(await key, {
      keyId,
      method: request.method,
      path: url.pathname + url.search,
      body: body ?? new Uint8Array(0),
      signQuery,
    });
    const headers = new Headers(request.headers);
    headers.set("Authorization", authorization);
    return send(new Request(request, body === undefined ? { headers } : { headers, body }));
  };
}
