// Routes registered from the OpenAPI document's paths: each path template ("/v1/leases/{id}")
// becomes a list of segments, literal or `{name}`, and a method table of operationIds. A
// template matches a request path of as many segments whose literals are equal and whose
// parameters are non-empty and pass their schema (core/schema.ts). No regexes per route:
// adding a route to OPERATIONS adds it here.
import { NetslotError } from "../core/errors.js";
import { OPERATIONS, type Operation, type OperationId, type PathParameter } from "../core/schema.js";
import type { OpenApiDocument } from "./openapi.js";
import { compileSchema, type Validator } from "./validate.js";

export type PathParams = Record<string, string | number>;

interface CompiledParameter {
  name: string;
  definition: PathParameter;
  integer: boolean;
  validate: Validator;
}

type Segment = { literal: string } | { param: CompiledParameter };

export interface Route {
  /** The OpenAPI path template; also the `route` label of the metrics. */
  template: string;
  /** Upper-case HTTP method → operationId, in the document's order. */
  methods: ReadonlyMap<string, OperationId>;
  /** What the Allow header lists (HEAD with GET). */
  allow: string;
  /** Answered without a token when consumers are configured. */
  publicMethods: ReadonlySet<string>;
  segments: readonly Segment[];
}

export type RouteMatch = { route: Route; params: PathParams } | { route: Route; error: NetslotError };

// Integers in a path are plain decimal: no sign, no leading zero, no exponent.
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;

function compileParameter(name: string, definition: PathParameter): CompiledParameter {
  const type = (definition.schema as { type?: unknown }).type;
  return { name, definition, integer: type === "integer", validate: compileSchema(definition.schema) };
}

/** The parameter's value from its raw segment, or null when the segment cannot be one. */
function parseParameter(param: CompiledParameter, segment: string): string | number | null {
  let text: string;
  try {
    text = decodeURIComponent(segment);
  } catch {
    return null;
  }
  if (param.integer && !DECIMAL.test(text)) return null;
  const value = param.integer ? Number(text) : text;
  return param.validate(value) === null ? value : null;
}

function describeInvalid(param: CompiledParameter, segment: string): NetslotError {
  let shown = segment;
  try {
    shown = decodeURIComponent(segment);
  } catch {
    // Shown as sent.
  }
  return new NetslotError(param.definition.invalid, `no ${param.definition.noun ?? param.name} ${JSON.stringify(shown)}`);
}

export class Router {
  /** Templates without parameters, by path: most requests are answered by one lookup. */
  private readonly exact = new Map<string, Route>();
  private readonly routes: Route[] = [];

  /**
   * `registered` says which operations have a handler: the paths whose operations have none
   * (e.g. the operator routes of a server without an admin) are left out, answering not_found.
   */
  constructor(document: OpenApiDocument, registered: (operationId: OperationId) => boolean) {
    for (const [template, item] of Object.entries(document.paths)) {
      const methods = new Map<string, OperationId>();
      const publicMethods = new Set<string>();
      let params: Operation["params"];
      for (const [key, value] of Object.entries(item)) {
        if (key === "parameters") continue;
        const operationId = (value as { operationId?: string }).operationId;
        if (operationId === undefined || !Object.prototype.hasOwnProperty.call(OPERATIONS, operationId)) {
          throw new Error(`${key.toUpperCase()} ${template} has no operation in core/schema.ts`);
        }
        const id = operationId as OperationId;
        if (!registered(id)) continue;
        const op: Operation = OPERATIONS[id];
        methods.set(key.toUpperCase(), id);
        if (op.public) publicMethods.add(key.toUpperCase());
        params ??= op.params;
      }
      if (methods.size === 0) continue;
      const segments: Segment[] = template
        .split("/")
        .slice(1)
        .map((part) => {
          const name = /^\{(.+)\}$/.exec(part)?.[1];
          if (name === undefined) return { literal: part };
          const definition = (params)?.[name];
          if (!definition) throw new Error(`${template}: {${name}} is not a parameter of its operations`);
          return { param: compileParameter(name, definition) };
        });
      const allow = [...methods.keys(), ...(methods.has("GET") ? ["HEAD"] : [])].join(", ");
      const route: Route = { template, methods, allow, publicMethods, segments };
      if (segments.every((segment) => "literal" in segment)) this.exact.set(template, route);
      else this.routes.push(route);
    }
    // Literal segments win over parameters where both could match (exact paths first of all).
    const literals = (r: Route): number => r.segments.filter((s) => "literal" in s).length;
    this.routes.sort((a, b) => literals(b) - literals(a));
  }

  /** The route of a path (without query), with its parameters or why they cannot exist; null for none. */
  match(pathname: string): RouteMatch | null {
    const exact = this.exact.get(pathname);
    if (exact) return { route: exact, params: {} };
    const parts = pathname.split("/").slice(1);
    for (const route of this.routes) {
      if (route.segments.length !== parts.length || pathname[0] !== "/") continue;
      const params: PathParams = {};
      let error: NetslotError | null = null;
      let matches = true;
      for (let i = 0; i < parts.length && matches; i++) {
        const segment = route.segments[i]!;
        const part = parts[i]!;
        if ("literal" in segment) {
          matches = segment.literal === part;
          continue;
        }
        if (part === "") {
          matches = false;
          continue;
        }
        const value = parseParameter(segment.param, part);
        if (value !== null) params[segment.param.name] = value;
        // A segment that cannot be this route's parameter at all: not this route.
        else if (segment.param.definition.invalid === "not_found") matches = false;
        else error ??= describeInvalid(segment.param, part);
      }
      if (!matches) continue;
      return error ? { route, error } : { route, params };
    }
    return null;
  }
}
