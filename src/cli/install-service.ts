// `netslot install-service`: writes packaging/netslot.service with ExecStart pointing at
// this installed copy (this node, this CLI) and enables it. With --root the unit goes under
// another root and is enabled offline (`systemctl --root`), which is also how it is tested:
// systemd itself need not run.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { ConfigError } from "../daemon/config.js";
import { PACKAGE_ROOT } from "../core/version.js";
import { parseFlags } from "./args.js";

export const UNIT_NAME = "netslot.service";
const TEMPLATE = path.join(PACKAGE_ROOT, "packaging", UNIT_NAME);
const CLI = path.join(PACKAGE_ROOT, "dist", "src", "cli", "main.js");

const USAGE = "usage: netslot install-service [--root DIR] [--dry-run] [--no-enable] [-- DAEMON-FLAGS...]";

// systemd splits ExecStart on whitespace and honours double quotes.
function quote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, "\\$1")}"`;
}

// The packaged unit's commands run the CLI of a copy at /opt/netslot through `env node`.
const PACKAGED_CLI = "/usr/bin/env node /opt/netslot/dist/src/cli/main.js";

/** The unit text: the packaged unit with its commands (and Documentation) pointing at this copy. */
export function renderUnit(daemonArgs: string[] = []): string {
  const template = fs.readFileSync(TEMPLATE, "utf8");
  const cli = [process.execPath, CLI].map(quote).join(" ");
  let execStarts = 0;
  const lines = template.split("\n").map((line) => {
    if (/^Exec[A-Za-z]*=/.test(line) && line.includes(PACKAGED_CLI)) {
      const rewritten = line.replace(PACKAGED_CLI, cli);
      if (!line.startsWith("ExecStart=")) return rewritten;
      execStarts++;
      return [rewritten, ...daemonArgs.map(quote)].join(" ");
    }
    if (line.startsWith("Documentation=file:")) return `Documentation=file:${path.join(PACKAGE_ROOT, "README.md")}`;
    return line;
  });
  if (execStarts !== 1) throw new Error(`${TEMPLATE}: expected one ExecStart running ${PACKAGED_CLI}, found ${execStarts}`);
  return `# Written by \`netslot install-service\` for the copy in ${PACKAGE_ROOT}.\n${lines.join("\n")}`;
}

function systemctl(args: string[]): void {
  const r = spawnSync("systemctl", args, { encoding: "utf8" });
  if (r.error) throw new ConfigError(`systemctl: ${r.error.message} (is systemd installed? use --no-enable to only write the unit)`);
  if (r.status !== 0) throw new ConfigError(`systemctl ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim()}`);
}

export function main(argv: string[]): number {
  const { values, positionals } = parseFlags(argv, { root: { type: "string" }, "dry-run": { type: "boolean" }, "no-enable": { type: "boolean" }, help: { type: "boolean" } }, USAGE, true);
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  // Daemon flags go after `--`; anything else positional is a mistake.
  const dashDash = argv.indexOf("--");
  const daemonArgs = dashDash >= 0 ? argv.slice(dashDash + 1) : [];
  if (positionals.length !== daemonArgs.length) throw new ConfigError(`unexpected argument ${positionals[0]}\n${USAGE}`);

  const unit = renderUnit(daemonArgs);
  if (values["dry-run"]) {
    process.stdout.write(unit);
    return 0;
  }
  const root = path.resolve(values.root ?? "/");
  const dir = path.join(root, "etc", "systemd", "system");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, UNIT_NAME);
  fs.writeFileSync(file, unit, { mode: 0o644 });
  process.stdout.write(`wrote ${file}\n`);
  if (values["no-enable"]) return 0;
  if (root === "/") {
    systemctl(["daemon-reload"]);
    systemctl(["enable", "--now", UNIT_NAME]);
    process.stdout.write(`enabled and started ${UNIT_NAME}\n`);
  } else {
    // Offline: creates the WantedBy= symlinks under the root; nothing is started.
    systemctl([`--root=${root}`, "enable", UNIT_NAME]);
    process.stdout.write(`enabled ${UNIT_NAME} under ${root}\n`);
  }
  return 0;
}
