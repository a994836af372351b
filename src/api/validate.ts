// Request validation from the schemas of core/schema.ts, compiled once with ajv (JSON
// Schema 2020-12, the dialect of OpenAPI 3.1) when the server is created, never per
// request. The few checks a schema cannot express (CIDR host bits) live here too.
import type { TSchema } from "@sinclair/typebox";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { OPERATIONS, type LeaseRequest, type Operation, type OperationId, type RequestOf } from "../core/schema.js";
import type { JsonSchema, OpenApiDocument } from "./openapi.js";

/** The request field at fault: a JSON pointer ("" for the whole body) and a readable reason. */
export interface FieldError {
  field: string;
  detail: string;
}

export type Checked<T> = { ok: true; value: T } | { ok: false; error: FieldError };

export type Validator = (value: unknown) => FieldError | null;

const BASE_ID = "https://netslot.dev/openapi.json";
const COMPONENT_REF = "#/components/schemas/";

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i;

/** OpenAPI refs point into the document; ajv sees the schemas under $defs of one root. */
function rewriteRefs(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(rewriteRefs);
  if (value === null || typeof value !== "object") return value;
  const out: { [key: string]: unknown } = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === "$ref" && typeof inner === "string" && inner.startsWith(COMPONENT_REF)) {
      out[key] = `${BASE_ID}#/$defs/${inner.slice(COMPONENT_REF.length)}`;
    } else {
      out[key] = rewriteRefs(inner);
    }
  }
  return out;
}

/** JSON pointer escaping (RFC 6901). */
export function pointerEscape(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}

function describe(error: ErrorObject, field: string): string {
  const name = field === "" ? "the request body" : field;
  const params = error.params as { [key: string]: unknown };
  switch (error.keyword) {
    case "additionalProperties":
      return `unknown field ${field}; see GET /v1/openapi.json for the accepted fields`;
    case "required":
      return `${name} is required`;
    case "type":
      return `${name} must be of type ${String(params["type"])}`;
    case "minimum":
    case "maximum":
    case "exclusiveMinimum":
    case "exclusiveMaximum":
    case "maxLength":
    case "minLength":
    case "maxProperties":
    case "enum":
      return `${name} ${error.message ?? "is invalid"}`;
    case "pattern":
      if (/^\/network\/cidr$/.test(field)) return `${name} must be an IPv4 CIDR such as 10.1.0.0/16`;
      if (/^\/labels\//.test(field)) {
        return `label key ${JSON.stringify(decodeLastToken(field))} must be 1-63 characters of [A-Za-z0-9._/-] starting with a letter or digit`;
      }
      return `${name} has an invalid format`;
    default:
      return `${name} ${error.message ?? "is invalid"}`;
  }
}

function decodeLastToken(pointer: string): string {
  const last = pointer.slice(pointer.lastIndexOf("/") + 1);
  return last.replace(/~1/g, "/").replace(/~0/g, "~");
}

/** Turns ajv's first error into the field it concerns (a JSON pointer into the body). */
export function fieldErrorFrom(error: ErrorObject): FieldError {
  const params = error.params as { [key: string]: unknown };
  let field = error.instancePath;
  const propertyName = (error as ErrorObject & { propertyName?: string }).propertyName ?? params["propertyName"];
  if (error.keyword === "additionalProperties" && typeof params["additionalProperty"] === "string") {
    field = `${field}/${pointerEscape(params["additionalProperty"])}`;
  } else if (error.keyword === "required" && typeof params["missingProperty"] === "string") {
    field = `${field}/${pointerEscape(params["missingProperty"])}`;
  } else if (typeof propertyName === "string") {
    field = `${field}/${pointerEscape(propertyName)}`;
  }
  return { field, detail: describe(error, field) };
}

function newAjv(): Ajv2020 {
  // allErrors off: the first error names the field, and validation stops early on junk.
  return new Ajv2020({
    allErrors: false,
    strict: true,
    allowUnionTypes: true,
    formats: {
      "date-time": (value: string) => DATE_TIME.test(value) && !Number.isNaN(Date.parse(value)),
    },
  });
}

function validatorOf(fn: ValidateFunction): Validator {
  return (value: unknown) => {
    if (fn(value)) return null;
    const first = fn.errors?.[0];
    return first ? fieldErrorFrom(first) : { field: "", detail: "the request body is invalid" };
  };
}

const shared = newAjv();

/** Compiles one schema of core/schema.ts (call at startup: compiling takes milliseconds). */
export function compileSchema(schema: TSchema): Validator {
  return validatorOf(shared.compile(schema));
}

/**
 * The schemas of an OpenAPI document (with its $refs), compiled on first use and cached:
 * for checking answers against the document as served.
 */
export class SchemaSet {
  private readonly ajv = newAjv();
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(doc: OpenApiDocument) {
    this.ajv.addSchema({ $id: BASE_ID, $defs: rewriteRefs(doc.components.schemas) as JsonSchema });
  }

  /** Compiles a schema as it appears in the document (inline, or a $ref to a component). */
  compile(schema: JsonSchema): Validator {
    const key = JSON.stringify(schema);
    let validate = this.cache.get(key);
    if (!validate) {
      validate = this.ajv.compile(rewriteRefs(schema) as JsonSchema);
      this.cache.set(key, validate);
    }
    return validatorOf(validate);
  }

  component(name: string): Validator {
    return this.compile({ $ref: `${COMPONENT_REF}${name}` });
  }
}

/** Checks what the schema cannot: the CIDR is a network address with a prefix of at most 30. */
export function checkCidrSemantics(cidr: string): string | null {
  const [address, prefixText] = cidr.split("/") as [string, string];
  const prefix = Number(prefixText);
  if (prefix > 30) return `/${prefix} leaves no room for hosts; the prefix length must be at most 30`;
  let value = 0;
  for (const octet of address.split(".")) value = value * 256 + Number(octet);
  const hostBits = 2 ** (32 - prefix);
  if (value % hostBits !== 0) {
    const base = value - (value % hostBits);
    const text = [base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join(".");
    return `host bits are set; did you mean ${text}/${prefix}?`;
  }
  return null;
}

/** Checks beyond the schema, by operation: run on a body the schema accepted. */
const SEMANTIC_CHECKS: { [K in OperationId]?: (body: RequestOf<K>) => FieldError | null } = {
  acquireLease(body: LeaseRequest) {
    if (body.owner !== undefined && body.ownerPid !== undefined) return { field: "/ownerPid", detail: "send owner or ownerPid, not both" };
    if (!body.network) return null;
    const reason = checkCidrSemantics(body.network.cidr);
    return reason ? { field: "/network/cidr", detail: `/network/cidr ${reason}` } : null;
  },
};

export interface RequestValidators {
  /**
   * The body of an operation, checked against its schema. On success the value is the parsed
   * body itself: the schemas are closed, so it holds only fields the schema defines, all of
   * them passed on (nothing is copied field by field, so nothing can be dropped).
   */
  body<K extends OperationId>(operationId: K, body: unknown): Checked<RequestOf<K>>;
  /**
   * The operation's query parameters found in a request URL, each checked against its schema
   * (`field` names the parameter). Parameters the operation does not define are ignored.
   */
  query(operationId: OperationId, url: string | undefined): Checked<Partial<Record<string, string>>>;
}

const NO_QUERY: Checked<Partial<Record<string, string>>> = { ok: true, value: {} };

export function createRequestValidators(): RequestValidators {
  const bodies = new Map<string, Validator>();
  for (const [operationId, op] of Object.entries(OPERATIONS) as [OperationId, Operation][]) {
    if (op.body) bodies.set(operationId, compileSchema(op.body));
  }
  const queries = new Map<string, { name: string; validate: Validator; allowed: unknown }[]>();
  for (const [operationId, op] of Object.entries(OPERATIONS) as [OperationId, Operation][]) {
    if (!op.query) continue;
    queries.set(
      operationId,
      Object.entries(op.query).map(([name, q]) => ({ name, validate: compileSchema(q.schema), allowed: (q.schema as { enum?: unknown }).enum })),
    );
  }
  return {
    query(operationId, url) {
      const params = queries.get(operationId);
      const at = url?.indexOf("?") ?? -1;
      // Most requests have no query: nothing parsed, nothing allocated.
      if (params === undefined || at === -1) return NO_QUERY;
      const end = url!.indexOf("#", at);
      const search = new URLSearchParams(url!.slice(at + 1, end === -1 ? undefined : end));
      const value: Record<string, string> = {};
      for (const param of params) {
        const given = search.get(param.name);
        if (given === null) continue;
        if (param.validate(given) !== null) {
          const detail = Array.isArray(param.allowed) ? `${param.name} must be ${param.allowed.join(" or ")}` : `${param.name} is invalid`;
          return { ok: false, error: { field: param.name, detail } };
        }
        value[param.name] = given;
      }
      return { ok: true, value };
    },
    body<K extends OperationId>(operationId: K, body: unknown): Checked<RequestOf<K>> {
      const validate = bodies.get(operationId);
      if (!validate) throw new Error(`${operationId} has no request body`);
      const error = validate(body);
      if (error) return { ok: false, error };
      const value = body as RequestOf<K>;
      const check = SEMANTIC_CHECKS[operationId];
      const semantic = check?.(value) ?? null;
      return semantic ? { ok: false, error: semantic } : { ok: true, value };
    },
  };
}
