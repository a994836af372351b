// `netslot device-plugin`: runs the Kubernetes device plugin (src/deviceplugin) until SIGTERM.
import { ConfigError, DEFAULTS } from "../daemon/config.js";
import { parseFlags } from "./args.js";

const USAGE =
  "usage: netslot device-plugin [--kubelet-dir DIR] [--socket API_SOCK] [--token T] [--reconcile-seconds N]";

export async function main(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      "kubelet-dir": { type: "string", default: "/var/lib/kubelet" },
      socket: { type: "string", default: process.env.NETSLOT_SOCKET ?? DEFAULTS.socket },
      token: { type: "string", default: process.env.NETSLOT_TOKEN },
      "reconcile-seconds": { type: "string", default: "10" },
      help: { type: "boolean" },
    },
    USAGE,
  );
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const reconcileSeconds = Number(values["reconcile-seconds"]);
  if (!Number.isInteger(reconcileSeconds) || reconcileSeconds < 1 || reconcileSeconds > 3600) {
    throw new ConfigError("--reconcile-seconds takes a whole number of seconds, 1..3600");
  }
  const { DevicePlugin } = await import("../deviceplugin/plugin.js");
  const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} netslot device-plugin: ${msg}\n`);
  const plugin = new DevicePlugin({
    kubeletDir: values["kubelet-dir"],
    socket: values.socket,
    ...(values.token ? { token: values.token } : {}),
    reconcileSeconds,
    log,
  });
  await plugin.start();
  const stop = (signal: string) => {
    log(`${signal}: stopping (leases stay with their pods)`);
    plugin.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  return -1; // keeps running
}
