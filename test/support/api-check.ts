// Raw HTTP on a unix socket (one request per connection), and checks of answers against an
// OpenAPI document, the way a consumer generated from it would read them: the route and method must be in the document, the status declared for
// the operation, the body valid against the declared schema; every error a problem+json
// of the registry with the status the registry gives its code. Used against the fake
// service (test/unit/api.test.ts) and against a real daemon (test/integration/api-schema.test.ts).
import assert from "node:assert/strict";
import * as http from "node:http";
import { ERRORS, isErrorCode, type ErrorCode } from "../../src/core/errors.js";
import type { OperationId } from "../../src/core/schema.js";
import type { JsonSchema, OpenApiDocument } from "../../src/api/openapi.js";
import { Router } from "../../src/api/router.js";
import { SchemaSet } from "../../src/api/validate.js";

export interface RawResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: unknown;
}

export interface RawOptions {
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  /** Write the body in chunks without a Content-Length. */
  chunked?: Buffer[];
}

/** One request on a fresh connection; errors after the response (EPIPE on a closed socket) are ignored. */
export function raw(socketPath: string, method: string, urlPath: string, opts: RawOptions = {}): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { ...opts.headers };
    if (opts.body !== undefined && headers["content-length"] === undefined) headers["content-length"] = Buffer.byteLength(opts.body);
    let answered = false;
    const req = http.request({ socketPath, method, path: urlPath, headers, agent: false }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", () => undefined);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
    });
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    if (opts.chunked) {
      for (const chunk of opts.chunked) req.write(chunk);
      req.end();
    } else {
      req.end(opts.body);
    }
  });
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export interface Checked {
  /** The operation answered, when the path and method are one. */
  operationId?: OperationId;
  status: number;
  /** The problem's code, for errors. */
  code?: ErrorCode;
}

type ResponseObject = { content?: Record<string, { schema: JsonSchema }>; headers?: Record<string, unknown> };

const RETRY_AFTER_CODES = new Set<ErrorCode>(["pool_exhausted", "quota_exceeded", "draining", "booting", "store_unavailable"]);

export class ResponseChecker {
  private readonly schemas: SchemaSet;
  private readonly router: Router;
  /** Every answer checked so far. */
  readonly seen: Checked[] = [];

  constructor(private readonly doc: OpenApiDocument) {
    this.schemas = new SchemaSet(doc);
    this.router = new Router(doc, () => true);
  }

  private resolve<T>(value: T | { $ref: string }): T {
    if (value && typeof value === "object" && "$ref" in value && typeof value.$ref === "string") {
      let node: unknown = this.doc;
      for (const part of value.$ref.replace(/^#\//, "").split("/")) node = (node as Record<string, unknown>)[part];
      return node as T;
    }
    return value as T;
  }

  /** Asserts that the answer is one the document allows; returns what it was. */
  check(method: string, urlPath: string, res: Answer): Checked {
    const where = `${method} ${urlPath} → ${res.status}`;
    const match = this.router.match(urlPath.split("?")[0]!);
    const item = match ? this.doc.paths[match.route.template] : undefined;
    const verb = method === "HEAD" ? "get" : method.toLowerCase();
    const operation = item?.[verb] as { operationId: OperationId; responses: Record<string, ResponseObject | { $ref: string }> } | undefined;
    const contentType = res.headers["content-type"] ?? "";
    const result: Checked = { status: res.status, ...(operation ? { operationId: operation.operationId } : {}) };
    if (res.status >= 400) {
      assert.match(contentType, /^application\/problem\+json/, `${where}: errors are problem+json`);
      const body = JSON.parse(res.text) as { status: number; type: string; code: string };
      const error = this.schemas.component("Problem")(body);
      assert.equal(error, null, `${where}: ${JSON.stringify(error)} in ${res.text}`);
      assert.equal(body.status, res.status, `${where}: status in the body`);
      assert.ok(isErrorCode(body.code), `${where}: ${body.code} is a registry code`);
      assert.equal(ERRORS[body.code].status, res.status, `${where}: the registry's status for ${body.code}`);
      assert.equal(body.type, `https://netslot.dev/errors/${body.code}`);
      if (RETRY_AFTER_CODES.has(body.code)) assert.match(String(res.headers["retry-after"]), /^\d+$/, `${where}: Retry-After`);
      if (body.code === "method_not_allowed") assert.ok(res.headers.allow, `${where}: Allow`);
      if (body.code === "unauthorized") assert.ok(res.headers["www-authenticate"], `${where}: WWW-Authenticate`);
      result.code = body.code;
      this.seen.push(result);
      return result;
    }
    assert.ok(operation, `${where}: answered, but ${method} ${urlPath} is not in the document`);
    const declared = operation.responses[String(res.status)];
    assert.ok(declared, `${where}: status ${res.status} is not declared for ${operation.operationId}`);
    const response = this.resolve<ResponseObject>(declared);
    if (!response.content || method === "HEAD") {
      assert.equal(res.text, "", `${where}: no body`);
    } else {
      const mediaType = Object.keys(response.content).find((mt) => contentType.startsWith(mt));
      assert.ok(mediaType, `${where}: content type ${contentType} is not declared`);
      if (mediaType === "application/json") {
        const error = this.schemas.compile(response.content[mediaType]!.schema)(JSON.parse(res.text));
        assert.equal(error, null, `${where}: ${JSON.stringify(error)} in ${res.text}`);
      }
    }
    for (const header of Object.keys(response.headers ?? {})) {
      if (header !== "Retry-After") assert.ok(res.headers[header.toLowerCase()], `${where}: header ${header}`);
    }
    this.seen.push(result);
    return result;
  }
}
