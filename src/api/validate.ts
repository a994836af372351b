// Request validation against openapi.json, the API's source of truth. The document's
// component schemas are compiled once with ajv (JSON Schema 2020-12, the dialect of
// OpenAPI 3.1); the few checks a schema cannot express (CIDR host bits) live here too.
import * as fs from "node:fs";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import type { LeaseRequest } from "../core/types.js";

export type JsonSchema = { [keyword: string]: unknown };

export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  paths: { [path: string]: { [methodOrKey: string]: unknown } };
  components: { schemas: { [name: string]: JsonSchema }; [section: string]: unknown };
}

/** Reads the document shipped next to this module (tsc copies it to dist/). */
export function loadOpenApiDocument(): OpenApiDocument {
  const text = fs.readFileSync(new URL("./openapi.json", import.meta.url), "utf8");
  return JSON.parse(text) as OpenApiDocument;
}

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

/** The document's component schemas, compiled on first use and cached. */
export class SchemaSet {
  private readonly ajv: Ajv2020;
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(doc: OpenApiDocument) {
    // allErrors off: the first error names the field, and validation stops early on junk.
    this.ajv = new Ajv2020({
      allErrors: false,
      strict: true,
      allowUnionTypes: true,
      formats: {
        "date-time": (value: string) => DATE_TIME.test(value) && !Number.isNaN(Date.parse(value)),
      },
    });
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
    const fn = validate;
    return (value: unknown) => {
      if (fn(value)) return null;
      const first = fn.errors?.[0];
      return first ? fieldErrorFrom(first) : { field: "", detail: "the request body is invalid" };
    };
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

export interface RequestValidators {
  leaseRequest(body: unknown): Checked<LeaseRequest>;
  renewRequest(body: unknown): Checked<{ ttlSeconds?: number }>;
  upgradeRequest(body: unknown): Checked<{ args?: string[] }>;
  /** Whether a path segment can be a lease id at all. */
  leaseId(id: string): boolean;
}

export function createRequestValidators(doc: OpenApiDocument, schemas = new SchemaSet(doc)): RequestValidators {
  const leaseRequest = schemas.component("LeaseRequest");
  const renewRequest = schemas.component("RenewRequest");
  const leaseId = schemas.component("LeaseId");
  const upgradeRequest = schemas.component("UpgradeRequest");
  return {
    leaseRequest(body) {
      const error = leaseRequest(body);
      if (error) return { ok: false, error };
      const input = body as LeaseRequest;
      if (input.network) {
        const reason = checkCidrSemantics(input.network.cidr);
        if (reason) return { ok: false, error: { field: "/network/cidr", detail: `/network/cidr ${reason}` } };
      }
      // A fresh object with only the known fields, so nothing else reaches the service.
      const value: LeaseRequest = {};
      if (input.ttlSeconds !== undefined) value.ttlSeconds = input.ttlSeconds;
      if (input.labels !== undefined) value.labels = { ...input.labels };
      if (input.network !== undefined) value.network = { vni: input.network.vni, cidr: input.network.cidr };
      if (input.ownerPid !== undefined) value.ownerPid = input.ownerPid;
      return { ok: true, value };
    },
    renewRequest(body) {
      const error = renewRequest(body);
      if (error) return { ok: false, error };
      const ttl = (body as { ttlSeconds?: number }).ttlSeconds;
      return { ok: true, value: ttl === undefined ? {} : { ttlSeconds: ttl } };
    },
    upgradeRequest(body) {
      const error = upgradeRequest(body);
      if (error) return { ok: false, error };
      const args = (body as { args?: string[] }).args;
      return { ok: true, value: args === undefined ? {} : { args: [...args] } };
    },
    leaseId(id) {
      return leaseId(id) === null;
    },
  };
}
