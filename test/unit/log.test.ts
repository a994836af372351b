// The daemon's logger (core/log.ts): JSON fields, levels, and the request scope that puts
// reqId on lines logged while a request is served, and only then.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createLogger, currentRequestId, inRequestScope } from "../../src/core/log.js";

function capture(level: "info" | "debug" = "info"): { lines: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level, destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  return { lines, logger };
}

test("a line is one JSON object: level by name, ISO time, pid, fields, msg", () => {
  const { lines, logger } = capture();
  logger.info({ event: "grant", consumer: "c", lease: "l_1", slot: 3 }, "audit");
  logger.child({ thread: "scrub" }).warn("slot 3 quarantined");
  logger.debug("below the level");
  assert.equal(lines.length, 2);
  assert.deepEqual({ ...lines[0], time: undefined }, { level: "info", time: undefined, pid: process.pid, event: "grant", consumer: "c", lease: "l_1", slot: 3, msg: "audit" });
  assert.match(String(lines[0]!["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(lines[1]!["level"], "warn");
  assert.equal(lines[1]!["thread"], "scrub");
});

test("reqId is on lines logged while the request is served, across awaits, and not after", async () => {
  const { lines, logger } = capture();
  let later: Promise<void> | undefined;
  await inRequestScope("r-1", async () => {
    logger.info("before an await");
    await new Promise((r) => setImmediate(r));
    assert.equal(currentRequestId(), "r-1");
    logger.info("after an await");
    // Work the request starts but does not wait for (a scrub, a timer) is not the request's.
    later = new Promise((resolve) => setTimeout(() => {
      logger.info("after the answer");
      resolve();
    }, 10));
  });
  logger.info("outside");
  await later;
  assert.deepEqual(
    lines.map((l) => [l["msg"], l["reqId"]]),
    [
      ["before an await", "r-1"],
      ["after an await", "r-1"],
      ["outside", undefined],
      ["after the answer", undefined],
    ],
  );
});

test("concurrent requests keep their own ids", async () => {
  const { lines, logger } = capture();
  const serve = (id: string, ms: number) =>
    inRequestScope(id, async () => {
      await new Promise((r) => setTimeout(r, ms));
      logger.info(id);
    });
  await Promise.all([serve("a", 20), serve("b", 5), serve("c", 10)]);
  assert.deepEqual(lines.map((l) => [l["msg"], l["reqId"]]), [["b", "b"], ["c", "c"], ["a", "a"]]);
});
