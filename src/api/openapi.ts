// The OpenAPI document and docs/errors.md's table, generated from core/schema.ts and the
// error registry. The daemon serves the document it builds here; src/api/openapi.json is
// the same document committed for readers and tools, kept in step by `npm run generate`
// and test/unit/api-contract.test.ts.
import type { TSchema } from "@sinclair/typebox";
import { ERRORS } from "../core/errors.js";
import { COMPONENTS, OPERATIONS, type Operation } from "../core/schema.js";

export type JsonSchema = { [keyword: string]: unknown };

export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; [key: string]: unknown };
  paths: { [path: string]: { [methodOrKey: string]: unknown } };
  components: { schemas: { [name: string]: JsonSchema }; [section: string]: unknown };
  [key: string]: unknown;
}

const COMPONENT_REF = "#/components/schemas/";

// Keywords in the order a reader looks for them (TypeBox puts its options first).
const KEY_ORDER = ["$ref", "description", "type", "enum", "required", "additionalProperties", "properties", "items"];

function ordered(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(ordered);
  if (value === null || typeof value !== "object") return value;
  const entries = Object.entries(value);
  const rank = (key: string): number => (KEY_ORDER.includes(key) ? KEY_ORDER.indexOf(key) : KEY_ORDER.length);
  // Property names keep their order: only keyword objects are sorted, and sort is stable.
  const isProperties = entries.every(([, v]) => v !== null && typeof v === "object");
  const sorted = isProperties ? entries : [...entries].sort(([a], [b]) => rank(a) - rank(b));
  return Object.fromEntries(sorted.map(([k, v]) => [k, ordered(v)]));
}

/** A schema as plain JSON: TypeBox's symbol keys dropped, keywords in reading order. */
function plain(schema: TSchema): JsonSchema {
  return ordered(JSON.parse(JSON.stringify(schema))) as JsonSchema;
}


// Components are recognised by their JSON text: TypeBox copies a schema when it is made
// optional, so object identity would miss most uses.
const componentByText = new Map<string, string>();
for (const [name, schema] of Object.entries(COMPONENTS)) {
  const text = JSON.stringify(plain(schema));
  const other = componentByText.get(text);
  if (other !== undefined) throw new Error(`components ${other} and ${name} are the same schema; keep one`);
  componentByText.set(text, name);
}

/** Replaces every subschema that is a named component with a $ref to it. */
function withRefs(value: unknown, root: string | null): unknown {
  if (Array.isArray(value)) return value.map((v) => withRefs(v, null));
  if (value === null || typeof value !== "object") return value;
  const name = componentByText.get(JSON.stringify(value));
  if (name !== undefined && name !== root) return { $ref: `${COMPONENT_REF}${name}` };
  const out: { [key: string]: unknown } = {};
  for (const [key, inner] of Object.entries(value)) out[key] = withRefs(inner, null);
  return out;
}

function schemaRef(schema: TSchema): unknown {
  return withRefs(plain(schema), null);
}

const problemResponse = { $ref: "#/components/responses/Problem" };

/** OpenAPI parameter objects; path parameters are required, query parameters optional. */
function parameterObjects(where: "path" | "query", parameters: Record<string, { schema: TSchema; description?: string }>): JsonSchema[] {
  return Object.entries(parameters).map(([name, p]) => ({
    name,
    in: where,
    required: where === "path",
    ...(p.description !== undefined ? { description: p.description } : {}),
    schema: schemaRef(p.schema),
  }));
}

function operationObject(operationId: string, op: Operation): JsonSchema {
  const out: JsonSchema = { operationId, summary: op.summary };
  if (op.public) out["security"] = [];
  if (op.query) out["parameters"] = parameterObjects("query", op.query);
  if (op.body) {
    out["requestBody"] = { required: false, content: { "application/json": { schema: schemaRef(op.body) } } };
  }
  const success: JsonSchema = { description: op.response.description };
  if (op.response.headers) {
    success["headers"] = Object.fromEntries(
      Object.entries(op.response.headers).map(([name, h]) => [name, { description: h.description, schema: { type: "string" } }]),
    );
  }
  if (op.response.schema) success["content"] = { "application/json": { schema: schemaRef(op.response.schema) } };
  if (op.response.text) success["content"] = { "text/plain": { schema: { type: "string" } } };
  const responses: JsonSchema = { [String(op.response.status)]: success };
  if (op.retryable) {
    responses["429"] = { $ref: "#/components/responses/RetryableProblem" };
    responses["503"] = { $ref: "#/components/responses/RetryableProblem" };
  }
  responses["default"] = problemResponse;
  out["responses"] = responses;
  return out;
}

function buildDocument(): OpenApiDocument {
  const paths: OpenApiDocument["paths"] = {};
  for (const [operationId, op] of Object.entries(OPERATIONS) as [string, Operation][]) {
    const item = (paths[op.path] ??= {});
    if (op.params && item["parameters"] === undefined) item["parameters"] = parameterObjects("path", op.params);
    if (item[op.method] !== undefined) throw new Error(`${op.method.toUpperCase()} ${op.path} is defined twice`);
    item[op.method] = operationObject(operationId, op);
  }
  const problemContent = { "application/problem+json": { schema: { $ref: `${COMPONENT_REF}Problem` } } };
  return {
    openapi: "3.1.0",
    info: {
      title: "netslot",
      version: "1.0.0",
      description:
        "Pre-created network slots for micro-VMs: acquire a lease on a slot, use its namespace and tap, release it. HTTP/1.1 + JSON on a unix socket. Errors are application/problem+json (RFC 9457) with a stable `code`; see docs/errors.md.",
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
    },
    servers: [{ url: "http://localhost", description: "unix socket, by default /run/netslot/api.sock" }],
    security: [{ bearer: [] }, {}],
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description:
            "Required on every request except GET /v1/health and GET /v1/openapi.json when the daemon is configured with consumers, unless the caller's uid or gid (read by the daemon with SO_PEERCRED) names a consumer; the token selects the consumer.",
        },
      },
      responses: {
        Problem: { description: "An error (RFC 9457 problem details)", content: problemContent },
        RetryableProblem: {
          description: "pool_exhausted, draining, booting or store_unavailable (503), or quota_exceeded (429); Retry-After says when to try again",
          headers: { "Retry-After": { description: "Seconds", schema: { type: "integer", minimum: 0 } } },
          content: problemContent,
        },
      },
      schemas: Object.fromEntries(
        Object.entries(COMPONENTS).map(([name, schema]) => [name, withRefs(plain(schema), name) as JsonSchema]),
      ),
    },
  };
}

let cached: OpenApiDocument | undefined;

/** The API's OpenAPI 3.1 document (built once; callers must not modify it). */
export function openApiDocument(): OpenApiDocument {
  cached ??= buildDocument();
  return cached;
}

/** The committed file's exact text. */
export function openApiText(): string {
  return `${JSON.stringify(openApiDocument(), null, 2)}\n`;
}

// ── docs/errors.md ───────────────────────────────────────────────────────────────────────

export const ERRORS_TABLE_BEGIN = "<!-- BEGIN GENERATED by `npm run generate` from src/core/errors.ts and src/core/schema.ts; do not edit -->";
export const ERRORS_TABLE_END = "<!-- END GENERATED -->";

function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** One line per field of a request body: its JSON pointer, type, limits and meaning. */
function fieldLines(prefix: string, schema: JsonSchema): string[] {
  const properties = (schema["properties"] ?? {}) as Record<string, JsonSchema>;
  const required = new Set((schema["required"] ?? []) as string[]);
  const lines: string[] = [];
  for (const [name, field] of Object.entries(properties)) {
    const pointer = `${prefix}/${name}`;
    const facts = [typeOf(field), ...(required.has(name) ? ["required"] : []), ...limitsOf(field)].join(", ");
    const meaning = typeof field["description"] === "string" ? `: ${field["description"]}` : "";
    lines.push(`- \`${pointer}\` (${facts})${meaning}`);
    if (field["properties"] !== undefined) lines.push(...fieldLines(pointer, field).map((l) => `  ${l}`));
  }
  return lines;
}

function typeOf(field: JsonSchema): string {
  const type = field["type"];
  return Array.isArray(type) ? type.join(" or ") : String(type);
}

function limitsOf(field: JsonSchema): string[] {
  const parts: string[] = [];
  const { minimum, maximum } = field as { minimum?: number; maximum?: number };
  if (minimum !== undefined && maximum !== undefined) parts.push(`${minimum}–${maximum}`);
  else if (minimum !== undefined) parts.push(`≥ ${minimum}`);
  else if (maximum !== undefined) parts.push(`≤ ${maximum}`);
  if (typeof field["maxProperties"] === "number") parts.push(`at most ${field["maxProperties"]} keys`);
  const names = field["propertyNames"] as JsonSchema | undefined;
  if (typeof names?.["pattern"] === "string") parts.push(`keys match \`${names["pattern"]}\``);
  const values = field["additionalProperties"] as JsonSchema | boolean | undefined;
  if (typeof values === "object" && typeof values["maxLength"] === "number") {
    parts.push(`${typeOf(values)} values of at most ${values["maxLength"]} characters`);
  }
  // A described field says what its pattern means; the pattern itself is in openapi.json.
  if (typeof field["pattern"] === "string" && field["description"] === undefined) parts.push(`matches \`${field["pattern"]}\``);
  return parts;
}

/** The generated part of docs/errors.md: the registry's table and the request fields' limits. */
export function errorsTable(): string {
  const rows = Object.entries(ERRORS).map(
    ([code, e]) => `| \`${code}\` | ${e.status} | ${cell(e.meaning)} | ${cell(e.fix)} |`,
  );
  return [
    ERRORS_TABLE_BEGIN,
    "",
    "| Code | Status | Meaning | How to fix |",
    "| --- | --- | --- | --- |",
    ...rows,
    "",
    "Request fields and their limits (`invalid_request` names the one at fault in `field`;",
    "any other field is refused as unknown):",
    "",
    ...(Object.values(OPERATIONS) as Operation[]).flatMap((op) =>
      op.body ? [`${op.method.toUpperCase()} ${op.path}:`, "", ...fieldLines("", plain(op.body)), ""] : [],
    ),
    ERRORS_TABLE_END,
  ].join("\n");
}

/** docs/errors.md with its generated part replaced; throws when the markers are missing. */
export function withErrorsTable(markdown: string): string {
  const begin = markdown.indexOf(ERRORS_TABLE_BEGIN);
  const end = markdown.indexOf(ERRORS_TABLE_END);
  if (begin === -1 || end === -1 || end < begin) throw new Error("docs/errors.md lacks the generated-table markers");
  return markdown.slice(0, begin) + errorsTable() + markdown.slice(end + ERRORS_TABLE_END.length);
}
