// The one registry of error codes. Codes are stable: never renamed, never reused.
// The API renders them as application/problem+json (RFC 9457); the SDK exposes
// `ErrorCode` as a union so callers can switch on it. docs/errors.md is checked
// against this table by a test.

export const ERRORS = {
  invalid_request: {
    status: 400,
    title: "The request is invalid",
    fix: "Correct the field named in `field` and `detail`; see GET /v1/openapi.json.",
  },
  unauthorized: {
    status: 401,
    title: "Missing or unknown bearer token",
    fix: "Send `Authorization: Bearer <token>` with a token configured for your consumer.",
  },
  lease_not_found: {
    status: 404,
    title: "No such lease",
    fix: "The lease does not exist, was released, expired, or belongs to another consumer.",
  },
  not_found: {
    status: 404,
    title: "No such endpoint",
    fix: "See GET /v1/openapi.json for the endpoints.",
  },
  method_not_allowed: {
    status: 405,
    title: "Method not allowed",
    fix: "See GET /v1/openapi.json for the methods of this endpoint.",
  },
  payload_too_large: {
    status: 413,
    title: "Request body too large",
    fix: "Request bodies are limited to 64 KiB.",
  },
  unsupported_media_type: {
    status: 415,
    title: "Unsupported media type",
    fix: "Send the body as `Content-Type: application/json`.",
  },
  forbidden: {
    status: 403,
    title: "Operator action",
    fix: "Quarantine retries, listing every consumer's leases, releasing another consumer's lease and draining need a consumer with role operator.",
  },
  network_forbidden: {
    status: 403,
    title: "Network not allowed for this consumer",
    fix: "Use a VNI listed in your consumer's `vnis` in the daemon's config file, or ask the operator to add it.",
  },
  owner_forbidden: {
    status: 403,
    title: "The owner process is not the caller",
    fix: "Send `owner: \"caller\"`, or an `ownerPid` that is the calling process itself or one of its descendants (as the daemon's PID namespace names it).",
  },
  quota_exceeded: {
    status: 429,
    title: "The consumer holds its maximum of leases",
    fix: "Release a lease first, retry after Retry-After, or ask the operator to raise quota.max.",
  },
  slot_not_quarantined: {
    status: 409,
    title: "The slot is not quarantined",
    fix: "Only a quarantined slot can be released from quarantine; see GET /v1/pool.",
  },
  pool_exhausted: {
    status: 503,
    title: "No free slot",
    fix: "Retry after the number of seconds in Retry-After, release unused leases, or grow --pool-size.",
  },
  draining: {
    status: 503,
    title: "The daemon is draining",
    fix: "The operator stopped new leases for maintenance (`netslot undrain` ends it); existing leases keep running. Retry later or on another host.",
  },
  booting: {
    status: 503,
    title: "The pool is still being built",
    fix: "Retry once GET /v1/health reports status ready.",
  },
  store_unavailable: {
    status: 503,
    title: "The lease store cannot be written",
    fix: "Check the disk under --state-dir (space, permissions); nothing was changed.",
  },
  internal: {
    status: 500,
    title: "Internal error",
    fix: "A bug: report it with the daemon's log. Nothing acknowledged was lost.",
  },
} as const satisfies Record<string, { status: number; title: string; fix: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** How a lease ended (in a lease_not_found answer for a lease that ended within the last hour). */
export interface LeaseEnd {
  at: string;
  cause: "released" | "expired" | "owner_exited" | "force_released";
  /** The operator, for force_released. */
  by?: string;
}

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
