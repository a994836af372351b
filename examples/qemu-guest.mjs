#!/usr/bin/env node
// Boots a guest with QEMU on a netslot lease, using only the SDK's VMM helpers:
//
//   node examples/qemu-guest.mjs --kernel vmlinuz --initrd initrd.img [--append "console=ttyS0"]
//        [--socket /run/netslot/api.sock] [--machine pc|microvm] [--accel tcg|kvm] [--memory 256]
//
// It leases a slot, runs QEMU inside the slot's namespace attached to its tap (the guest's
// address comes from the lease's ip= boot argument, or from the guest's own init), copies
// the serial console to stdout, releases the lease when QEMU exits and exits with QEMU's
// status. The guest must power off by itself (-no-reboot).
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { NetslotClient, kernelBootArg, netnsExecArgs, qemuNetArgs } from "netslot";

const { values } = parseArgs({
  options: {
    kernel: { type: "string" },
    initrd: { type: "string" },
    append: { type: "string", default: "console=ttyS0 panic=-1 reboot=t" },
    socket: { type: "string" },
    machine: { type: "string", default: "pc" },
    // TCG by default: nested KVM hangs on some hosts (and on the CI machines).
    accel: { type: "string", default: "tcg" },
    memory: { type: "string", default: "256" },
  },
});
if (!values.kernel) {
  process.stderr.write("usage: qemu-guest.mjs --kernel FILE [--initrd FILE] [--append ARGS] [--socket PATH]\n");
  process.exit(2);
}

const client = new NetslotClient(values.socket ? { socketPath: values.socket } : {});
const code = await client.withSlot({ labels: { example: "qemu-guest" } }, (lease) => {
  process.stderr.write(`qemu-guest: lease ${lease.id} on ${lease.slot.netns}\n`);
  const [nsenter, ...prefix] = netnsExecArgs(lease);
  const qemu = [
    "qemu-system-x86_64",
    "-M", values.machine,
    "-accel", values.accel,
    "-m", values.memory,
    "-display", "none",
    "-monitor", "none",
    "-serial", "stdio",
    "-no-reboot",
    "-kernel", values.kernel,
    ...(values.initrd ? ["-initrd", values.initrd] : []),
    "-append", `${values.append} ${kernelBootArg(lease)}`,
    ...qemuNetArgs(lease, { machine: values.machine }),
  ];
  const child = spawn(nsenter, [...prefix, ...qemu], { stdio: ["ignore", "inherit", "inherit"] });
  const stop = () => child.kill("SIGTERM");
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (status, signal) => resolve(status ?? (signal ? 128 : 1)));
  });
});
client.close();
process.exitCode = code;
