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
  upgrade_failed: {
    status: 502,
    title: "The new daemon did not take over",
    fix: "`detail` has the new daemon's error; this daemon keeps serving. Fix the cause (flags, installed code) and run `netslot upgrade` again.",
  },
  internal: {
    status: 500,
    title: "Internal error",
    fix: "A bug: report it with the daemon's log. Nothing acknowledged was lost.",
  },
} as const satisfies Record<string, { status: number; title: string; fix: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class NetslotError extends Error {
  readonly code: ErrorCode;
  /** The request field at fault, for invalid_request (a JSON pointer like /ttlSeconds). */
  readonly field: string | undefined;
  /** Seconds, for errors that are worth retrying (pool_exhausted, booting). */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, detail: string, opts: { field?: string; retryAfter?: number; cause?: unknown } = {}) {
    super(detail, { cause: opts.cause });
    this.name = "NetslotError";
    this.code = code;
    this.field = opts.field;
    this.retryAfter = opts.retryAfter;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(ERRORS, value);
}
