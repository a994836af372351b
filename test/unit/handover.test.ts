// The new daemon's flags in an upgrade: the running ones with overrides replacing flags of
// the same name, in either --flag value or --flag=value form.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mergeDaemonArgs } from "../../src/daemon/handover.js";
import { NetslotError } from "../../src/core/errors.js";

test("overrides replace running flags of the same name, whatever their form", () => {
  const running = ["--prefix", "nsl", "--pool-size=16", "--no-progress", "--uplink", "eth0"];
  assert.deepEqual(mergeDaemonArgs(running, []), running);
  assert.deepEqual(mergeDaemonArgs(running, ["--pool-size", "32"]), ["--prefix", "nsl", "--no-progress", "--uplink", "eth0", "--pool-size", "32"]);
  assert.deepEqual(mergeDaemonArgs(running, ["--uplink=eth1", "--guest-mtu", "1400"]), ["--prefix", "nsl", "--pool-size=16", "--no-progress", "--uplink=eth1", "--guest-mtu", "1400"]);
});

test("flags naming the daemon being replaced cannot change; stray words are refused", () => {
  for (const fixed of [["--socket", "/x"], ["--state-dir=/y"], ["--prefix", "abc"], ["--link-cidr", "10.9.0.0/16"]]) {
    assert.throws(() => mergeDaemonArgs(["--prefix", "nsl"], fixed), (e: unknown) => e instanceof NetslotError && e.code === "invalid_request");
  }
  assert.throws(() => mergeDaemonArgs([], ["1400"]), (e: unknown) => e instanceof NetslotError && e.code === "invalid_request");
});
