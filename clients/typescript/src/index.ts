// ARMOR-PSK request signing for browsers, Node >= 18, Deno and Bun.

export {
  ArmorPskError,
  MAX_FIELD_LENGTH,
  SCHEME,
  checkField,
  importSecret,
  newNonce,
  sign,
  signWithKey,
  webCrypto,
} from "./sign.js";
export type { Body, SignInput } from "./sign.js";
export { armorFetch } from "./fetch.js";
export type { ArmorFetchOptions, FetchLike } from "./fetch.js";

/** This package's version, the workspace's. */
export const VERSION = "0.1.0";
