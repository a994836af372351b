// Consumers, VNI authorisation and admission (quotas, reservations) without a daemon.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { NetslotError } from "../../src/core/errors.js";
import { ConsumerDirectory, DEFAULT, mayAttach, parseConsumers } from "../../src/tenancy/consumers.js";
import { Quotas } from "../../src/tenancy/quotas.js";
import { WaitQueue } from "../../src/pool/waiters.js";
import { parseDaemonArgs } from "../../src/daemon/config.js";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const token = (n: string) => `${n}-token-0123456789`;

function code(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof NetslotError, String(err));
    return err.code;
  }
}

describe("consumers", () => {
  test("vnis: single values and ranges, merged; none without vnis", () => {
    const [a, b] = parseConsumers([{ name: "a", token: token("a"), vnis: ["100-199", 4242, "150-260", "5"] }, { name: "b", token: token("b") }], 10);
    assert.deepEqual(a!.vnis, [
      [5, 5],
      [100, 260],
      [4242, 4242],
    ]);
    for (const vni of [5, 100, 199, 260, 4242]) assert.ok(mayAttach(a!, vni), String(vni));
    for (const vni of [4, 6, 99, 261, 4241, 4243]) assert.ok(!mayAttach(a!, vni), String(vni));
    assert.ok(!mayAttach(b!, 5));
    assert.ok(mayAttach(DEFAULT, 16_777_215), "the implicit consumer attaches any VNI");
  });

  test("reservations larger than the pool are a config error, one line", () => {
    const entries = [
      { name: "a", token: token("a"), quota: { reserved: 40 } },
      { name: "b", token: token("b"), quota: { reserved: 30 } },
    ];
    assert.throws(() => parseConsumers(entries, 64), /^Error: consumers reserve 70 slots in total, more than the pool's 64$/);
    parseConsumers(entries, 70);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-cfg-"));
    try {
      const file = path.join(dir, "config.json");
      fs.writeFileSync(file, JSON.stringify({ consumers: entries }));
      assert.throws(() => parseDaemonArgs(["--config", file, "--pool-size", "64"]), (err: Error) => {
        assert.equal(err.name, "ConfigError");
        assert.doesNotMatch(err.message, /\n/);
        assert.match(err.message, /reserve 70 slots/);
        return true;
      });
      assert.equal(parseDaemonArgs(["--config", file, "--pool-size", "100", "--socket-group", "netslot"]).socketGroup, "netslot");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("identified by token first, else by uid, then gid", () => {
    const d = new ConsumerDirectory([
      { name: "tok", token: token("t") },
      { name: "byuid", uids: [1000] },
      { name: "bygid", gids: [2000] },
    ]);
    const peer = { pid: 1, uid: 1000, gid: 2000 };
    assert.equal(d.identify(`Bearer ${token("t")}`, peer)?.name, "tok");
    assert.equal(d.identify("Bearer wrong-token-0123456789", peer), null, "a wrong token is not rescued by the uid");
    assert.equal(d.identify(undefined, peer)?.name, "byuid");
    assert.equal(d.identify(undefined, { ...peer, uid: 5 })?.name, "bygid");
    assert.equal(d.identify(undefined, { pid: 1, uid: 5, gid: 5 }), null);
    assert.equal(d.identify(undefined, undefined), null);
    assert.equal(new ConsumerDirectory([]).identify(undefined, undefined), DEFAULT);
  });
});

describe("quotas", () => {
  const d = new ConsumerDirectory(
    [
      { name: "lambda", token: token("l"), quota: { reserved: 3, max: 5 } },
      { name: "dsql", token: token("d"), quota: { reserved: 2 }, priority: 1 },
      { name: "other", token: token("o") },
    ],
    10,
  );
  const q = new Quotas(d);

  test("max caps a consumer: quota_exceeded", () => {
    const leased = new Map([["lambda", 5]]);
    assert.equal(code(() => q.admit("lambda", 5, (n) => leased.get(n) ?? 0)), "quota_exceeded");
    assert.equal(code(() => q.admit("lambda", 5, () => 4)), undefined);
  });

  test("reserved slots are held: others get pool_exhausted when only those remain", () => {
    const none = () => 0;
    // 5 free, 3 + 2 reserved for lambda and dsql: "other" may not take any.
    assert.equal(code(() => q.admit("other", 5, none)), "pool_exhausted");
    assert.equal(code(() => q.admit("other", 6, none)), undefined);
    // lambda may take from its own reservation even when only reserved slots remain.
    assert.equal(code(() => q.admit("lambda", 5, none)), undefined);
    assert.equal(code(() => q.admit("lambda", 2, none)), "pool_exhausted", "the last 2 are dsql's");
    // Once lambda holds its 3, only dsql's 2 are held back.
    const leased = new Map([["lambda", 3]]);
    assert.equal(code(() => q.admit("other", 3, (n) => leased.get(n) ?? 0)), undefined);
    assert.equal(code(() => q.admit("other", 2, (n) => leased.get(n) ?? 0)), "pool_exhausted");
  });

  test("usage lists every consumer", () => {
    assert.deepEqual(q.usage((n) => (n === "dsql" ? 1 : 0)), [
      { name: "lambda", leased: 0, reserved: 3, max: 5 },
      { name: "dsql", leased: 1, reserved: 2, max: null },
      { name: "other", leased: 0, reserved: 0, max: null },
    ]);
  });
});

describe("waiting for a slot", () => {
  test("offers go by priority, then arrival; a wait that runs out answers the refusal", async () => {
    let free = 0;
    const q = new WaitQueue<string>(() => free > 0);
    const exhausted = new NetslotError("pool_exhausted", "no slot", { retryAfter: 1 });
    const take = (who: string) => () => {
      if (free === 0) throw exhausted;
      free--;
      return who;
    };
    const served: string[] = [];
    const a = q.wait(0, 5, exhausted, take("low-first")).then((v) => served.push(v));
    const b = q.wait(1, 5, exhausted, take("high")).then((v) => served.push(v));
    const c = q.wait(0, 5, exhausted, take("low-second")).then((v) => served.push(v));
    const late = q.wait(0, 0.2, exhausted, take("never"));
    free = 1;
    q.wake();
    await b;
    assert.deepEqual(served, ["high"]);
    free = 2;
    q.wake();
    await Promise.all([a, c]);
    assert.deepEqual(served, ["high", "low-first", "low-second"]);
    await assert.rejects(late, (err: NetslotError) => err.code === "pool_exhausted" && /waited 0.2 s/.test(err.message) && err.retryAfter === 1);
    assert.equal(q.size, 0);
  });

  test("another error ends the wait; rejectAll ends them all", async () => {
    const q = new WaitQueue<string>(() => true);
    const w = q.wait(0, 5, new NetslotError("quota_exceeded", "max"), () => {
      throw new NetslotError("store_unavailable", "disk full");
    });
    q.wake();
    await assert.rejects(w, (err: NetslotError) => err.code === "store_unavailable");
    const d = q.wait(0, 5, new NetslotError("pool_exhausted", "no"), () => {
      throw new NetslotError("pool_exhausted", "no");
    });
    q.rejectAll(new NetslotError("draining", "drain"));
    await assert.rejects(d, (err: NetslotError) => err.code === "draining");
  });
});
