// `netslot install-service`'s unit: the packaged unit with every command pointing at this copy.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { renderUnit } from "../../src/cli/install-service.js";
import { REPO_ROOT } from "../support/env.js";

describe("install-service unit", () => {
  const cli = path.join(REPO_ROOT, "dist", "src", "cli", "main.js");

  it("runs this node and this CLI in every command, daemon flags appended to ExecStart only", () => {
    const unit = renderUnit(["--pool-size", "3", "--config", "/etc/net slot.json"]);
    const exec = unit.split("\n").filter((l) => /^Exec[A-Za-z]*=/.test(l));
    assert.ok(exec.length >= 1);
    for (const line of exec) assert.ok(line.includes(`${process.execPath} ${cli} `), line);
    assert.ok(!unit.split("\n").some((l) => !l.startsWith("#") && l.includes("/opt/netslot/dist")), "no command left on the packaged path");
    assert.equal(exec.find((l) => l.startsWith("ExecStart=")), `ExecStart=${process.execPath} ${cli} daemon --no-progress --pool-size 3 --config "/etc/net slot.json"`);
    assert.ok(!exec.filter((l) => !l.startsWith("ExecStart=")).some((l) => l.includes("--pool-size")));
  });

  it("keeps the rest of the packaged unit as it is", () => {
    const packaged = fs.readFileSync(path.join(REPO_ROOT, "packaging", "netslot.service"), "utf8").split("\n");
    const rendered = renderUnit().split("\n").slice(1); // the first line says who wrote it
    assert.equal(rendered.length, packaged.length);
    const changed = packaged.filter((l, i) => l !== rendered[i]);
    assert.ok(changed.every((l) => /^(Exec[A-Za-z]*|Documentation)=/.test(l)), changed.join("\n"));
  });
});
