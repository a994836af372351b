// Reading a request body: at most MAX_BODY_BYTES, JSON only, UTF-8 only. An empty body is
// `{}` whatever its headers say, so `POST /v1/leases` with nothing works.
import type * as http from "node:http";
import { NetslotError } from "../core/errors.js";
import { sendProblem } from "./problem.js";

/** Request bodies larger than this are refused with 413. */
export const MAX_BODY_BYTES = 64 * 1024;

/** Sentinel: the request was already answered (or abandoned by the client). */
export const ANSWERED = Symbol("answered");

/** Whether the request carries a body (chunked, or a Content-Length over zero). */
export function announcesBody(req: http.IncomingMessage): boolean {
  if (req.headers["transfer-encoding"] !== undefined) return true;
  const length = req.headers["content-length"];
  return length !== undefined && Number(length) > 0;
}

function isJsonContentType(value: string): boolean {
  const [type, ...params] = value.split(";").map((part) => part.trim().toLowerCase());
  if (type !== "application/json") return false;
  for (const param of params) {
    const [name, v] = param.split("=").map((s) => s.trim());
    if (name === "charset" && v !== "utf-8" && v !== '"utf-8"') return false;
  }
  return true;
}

/** Reads a body of at most `limit` bytes; null when it is larger (reading stops there). */
function readLimited(req: http.IncomingMessage, limit: number): Promise<Buffer | null | "aborted"> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onAbort);
      req.off("close", onAbort);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.pause();
        chunks.length = 0;
        resolve(null);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onAbort = (): void => {
      cleanup();
      resolve("aborted");
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onAbort);
    req.on("close", onAbort);
  });
}

/**
 * The parsed JSON body, `{}` when empty. Answers 413 and 415 itself (closing the connection,
 * so an unread rest is never read) and returns ANSWERED; throws invalid_request on bytes that
 * are not UTF-8 JSON.
 */
export async function readJsonBody(req: http.IncomingMessage, res: http.ServerResponse): Promise<unknown> {
  const lengthHeader = req.headers["content-length"];
  const length = lengthHeader === undefined ? undefined : Number(lengthHeader);
  const hasBody = announcesBody(req);
  if (length !== undefined && length > MAX_BODY_BYTES) {
    sendProblem(res, new NetslotError("payload_too_large", `the body is ${length} bytes; at most ${MAX_BODY_BYTES} are accepted`), {
      Connection: "close",
    });
    return ANSWERED;
  }
  const contentType = req.headers["content-type"];
  // Only a body needs a media type: an empty POST is {} whatever its headers say.
  if (hasBody && !(contentType !== undefined && isJsonContentType(contentType))) {
    const got = contentType === undefined ? "no Content-Type" : `Content-Type ${JSON.stringify(contentType)}`;
    sendProblem(res, new NetslotError("unsupported_media_type", `the body must be application/json; got ${got}`), {
      Connection: "close",
    });
    return ANSWERED;
  }
  if (!hasBody) return {};
  const body = await readLimited(req, MAX_BODY_BYTES);
  if (body === "aborted") return ANSWERED;
  if (body === null) {
    sendProblem(res, new NetslotError("payload_too_large", `the body is larger than ${MAX_BODY_BYTES} bytes`), {
      Connection: "close",
    });
    return ANSWERED;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    throw new NetslotError("invalid_request", "the request body is not valid UTF-8", { field: "" });
  }
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new NetslotError("invalid_request", `the request body is not valid JSON: ${reason}`, { field: "" });
  }
}
