// Consumers and their bearer tokens. With none configured every caller is "default";
// with some, the token picks the consumer and is compared in constant time.
import { createHash, timingSafeEqual } from "node:crypto";
import { NetslotError } from "../core/errors.js";

export interface ConsumerConfig {
  name: string;
  token: string;
}

export const DEFAULT_CONSUMER = "default";

// Same rule as the daemon's config (src/daemon/config.ts).
const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
// Visible ASCII: anything else cannot be sent in an Authorization header as one token.
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

/** Throws on a config that would make authentication ambiguous or impossible. */
export function validateConsumers(consumers: readonly ConsumerConfig[]): void {
  const names = new Set<string>();
  const tokens = new Set<string>();
  for (const consumer of consumers) {
    if (typeof consumer.name !== "string" || !NAME_PATTERN.test(consumer.name)) {
      throw new Error(`consumer name ${JSON.stringify(consumer.name)} must be 1-64 characters of [A-Za-z0-9_.-]`);
    }
    if (typeof consumer.token !== "string" || consumer.token.length > 4096 || !TOKEN_PATTERN.test(consumer.token)) {
      throw new Error(`the token of consumer "${consumer.name}" must be non-empty visible ASCII without spaces`);
    }
    if (names.has(consumer.name)) throw new Error(`consumer "${consumer.name}" is configured twice`);
    if (tokens.has(consumer.token)) throw new Error(`consumer "${consumer.name}" shares its token with another consumer`);
    names.add(consumer.name);
    tokens.add(consumer.token);
  }
}

function digest(text: string): Buffer {
  // Hashing first gives equal-length buffers, so timingSafeEqual never leaks the length.
  return createHash("sha256").update(text, "utf8").digest();
}

export class ConsumerAuth {
  private readonly entries: { name: string; digest: Buffer }[];

  constructor(consumers: readonly ConsumerConfig[] = []) {
    validateConsumers(consumers);
    this.entries = consumers.map((c) => ({ name: c.name, digest: digest(c.token) }));
  }

  /** Whether requests must carry a token. */
  get required(): boolean {
    return this.entries.length > 0;
  }

  /** The consumer for an Authorization header value, or null when it names none. */
  authenticate(authorization: string | undefined): string | null {
    if (!this.required) return DEFAULT_CONSUMER;
    if (authorization === undefined) return null;
    const match = /^Bearer +(\S+) *$/i.exec(authorization);
    if (!match) return null;
    const presented = digest(match[1]!);
    let found: string | null = null;
    // Look at every entry, so the time taken does not say which one matched.
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, presented) && found === null) found = entry.name;
    }
    return found;
  }
}

/** The consumer a request acts as; null on a public route called without a valid token. */
export function authorize(auth: ConsumerAuth, authorization: string | undefined, isPublic: boolean): string | null | NetslotError {
  const consumer = auth.authenticate(authorization);
  if (consumer !== null || isPublic) return consumer;
  const detail =
    authorization === undefined
      ? "this daemon has consumers configured; send Authorization: Bearer <token>"
      : "the bearer token is not one of a configured consumer";
  return new NetslotError("unauthorized", detail);
}

/** Sent with unauthorized. */
export const AUTHENTICATE_HEADERS = { "WWW-Authenticate": 'Bearer realm="netslot"' };
