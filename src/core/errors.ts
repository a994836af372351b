// The one registry of error codes. Codes are stable: never renamed, never reused.
// The API renders them as application/problem+json (RFC 9457); the SDK exposes
// `ErrorCode` as a union so callers can switch on it. openapi.json's ErrorCode enum and
// docs/errors.md's table are generated from this registry (`npm run generate`).
// To add an error: one entry here (status, title, meaning, fix), then `npm run generate`.

import type { LeaseEnd } from "./schema.js";

export const ERRORS = {
  invalid_request: {
    status: 400,
    title: "The request is invalid",
    meaning: "The body is not valid JSON, has an unknown field, or a field breaks its schema (the limits are listed below the table). Also malformed HTTP.",
    fix: "Correct the field named in `field` and `detail`; the schemas are in GET /v1/openapi.json.",
  },
  unauthorized: {
    status: 401,
    title: "Missing or unknown bearer token",
    meaning:
      "The daemon has consumers configured and the request has no `Authorization: Bearer` header and comes from a uid/gid no consumer lists, or has a token no consumer has.",
    fix: "Send `Authorization: Bearer <token>` with your consumer's token (the CLI reads `NETSLOT_TOKEN`), or run as a uid/gid listed in your consumer's `uids`/`gids`.",
  },
  forbidden: {
    status: 403,
    title: "Operator action",
    meaning:
      "An operator action by a consumer without `role: \"operator\"`: retrying a quarantined slot, `GET /v1/leases?all=true`, draining or undraining. (Releasing another consumer's lease answers `lease_not_found`.)",
    fix: "Ask an operator, or use a consumer configured with `\"role\": \"operator\"`.",
  },
  network_forbidden: {
    status: 403,
    title: "Network not allowed for this consumer",
    meaning: "The lease asks for a tenant VNI that is not in the consumer's `vnis` (a consumer without `vnis` may attach none). Nothing was changed.",
    fix: "Use a VNI listed in your consumer's `vnis` in the daemon's config file, or ask the operator to add it.",
  },
  owner_forbidden: {
    status: 403,
    title: "The owner process is not the caller",
    meaning:
      "`ownerPid` is neither the calling process nor one of its descendants (the kernel reports the caller with SO_PEERCRED), e.g. `ownerPid: 1` or a pid from inside a container's PID namespace.",
    fix: "Send `\"owner\": \"caller\"` (the SDK's default), which binds the lease to the calling process whatever its PID namespace.",
  },
  quota_exceeded: {
    status: 429,
    title: "The consumer holds its maximum of leases",
    meaning: "The consumer already holds `quota.max` leases.",
    fix: "Release leases you no longer use, retry after `Retry-After` seconds, or ask the operator to raise `quota.max`.",
  },
  profile_forbidden: {
    status: 403,
    title: "The consumer may not use this profile",
    meaning:
      "The request names a profile the daemon defines but this consumer's `profiles` list (config file) does not include. An unknown profile is `invalid_request` with `field` `/profile`.",
    fix: "Name one of your consumer's profiles, or ask the operator to list this one for your consumer.",
  },
  lease_not_found: {
    status: 404,
    title: "No such lease",
    meaning:
      "No such lease for this consumer: it never existed, was released, expired, its owner process died, an operator force-released it, or it belongs to another consumer. For the caller's lease that ended within the hour, `ended` says when and how.",
    fix: "Acquire a new lease; keep TTL leases alive with renew (the SDK's `autoRenew`).",
  },
  not_found: {
    status: 404,
    title: "No such endpoint",
    meaning: "No endpoint at this path.",
    fix: "Check the path against GET /v1/openapi.json (paths start with `/v1/`, except `/metrics`).",
  },
  method_not_allowed: {
    status: 405,
    title: "Method not allowed",
    meaning: "The path exists but not with this method; `Allow` lists the methods it has.",
    fix: "Use one of the methods in the `Allow` header.",
  },
  payload_too_large: {
    status: 413,
    title: "Request body too large",
    meaning: "The request body is over 64 KiB; the daemon stops reading and closes the connection.",
    fix: "Send a smaller body; requests are small JSON objects.",
  },
  unsupported_media_type: {
    status: 415,
    title: "Unsupported media type",
    meaning: "A POST with a body whose `Content-Type` is not `application/json` (an empty body is `{}` and needs none).",
    fix: "Send `Content-Type: application/json`.",
  },
  slot_not_quarantined: {
    status: 409,
    title: "The slot is not quarantined",
    meaning: "`netslot quarantine release N` for a slot that is not quarantined.",
    fix: "Pick a slot from `quarantinedSlots` of GET /v1/pool (or `netslot status`).",
  },
  pool_exhausted: {
    status: 503,
    title: "No free slot",
    meaning: "Every slot is leased, scrubbing or quarantined, or the free slots left are reserved for other consumers (`quota.reserved`).",
    fix: "Retry after `Retry-After` seconds, release leases you no longer use, grow `--pool-size`, or ask for a reservation.",
  },
  draining: {
    status: 503,
    title: "The daemon is draining",
    meaning: "An operator ran `netslot drain` (host maintenance): no new leases; existing leases run on. The switch survives a restart.",
    fix: "Retry later or on another host; an operator ends it with `netslot undrain`.",
  },
  booting: {
    status: 503,
    title: "The pool is still being built",
    meaning: "The daemon is still building the pool.",
    fix: "Retry after `Retry-After` seconds, or wait until GET /v1/health reports `ready`.",
  },
  store_unavailable: {
    status: 503,
    title: "The lease store cannot be written",
    meaning: "The lease store could not be written; nothing was changed.",
    fix: "Check the disk under `--state-dir` (space, permissions), then retry.",
  },
  upgrade_failed: {
    status: 502,
    title: "The new daemon did not take over",
    meaning:
      "`netslot upgrade`: the new daemon failed to start or to adopt the pool (bad flags, broken installed code, a crash), or another upgrade is under way. The running daemon keeps serving; nothing changed.",
    fix: "`detail` has the new daemon's error; this daemon keeps serving. Fix the cause (flags, installed code) and run `netslot upgrade` again.",
  },
  internal: {
    status: 500,
    title: "Internal error",
    meaning: "A bug in the daemon; the request may or may not have taken effect, but nothing acknowledged was lost.",
    fix: "Report it with the daemon's log (the log has the stack trace).",
  },
} as const satisfies Record<string, { status: number; title: string; meaning: string; fix: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class NetslotError extends Error {
  readonly code: ErrorCode;
  /** The request field at fault, for invalid_request (a JSON pointer like /ttlSeconds). */
  readonly field: string | undefined;
  /** Seconds, for errors that are worth retrying (pool_exhausted, quota_exceeded, draining, booting). */
  readonly retryAfter: number | undefined;
  /** For lease_not_found of a lease that ended recently: when and how. */
  readonly ended: LeaseEnd | undefined;

  constructor(code: ErrorCode, detail: string, opts: { field?: string; retryAfter?: number; ended?: LeaseEnd; cause?: unknown } = {}) {
    super(detail, { cause: opts.cause });
    this.name = "NetslotError";
    this.code = code;
    this.field = opts.field;
    this.retryAfter = opts.retryAfter;
    this.ended = opts.ended;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(ERRORS, value);
}
