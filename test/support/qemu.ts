// A real VM on a slot for tests: QEMU under TCG (nested KVM hangs on these machines, see
// the workspace notes on the test guest) booting Debian's kernel with a busybox initramfs built by
// scripts/build-guest-image.sh. The initramfs's /init configures eth0 as the guest, runs
// /check.sh, prints its output between markers on the serial console and powers off.
// Each run appends a small cpio archive holding the test's /check.sh (Linux unpacks
// concatenated archives in order).
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { GUEST_MAC } from "../../src/dataplane/topology.js";
import { REPO_ROOT } from "./env.js";
import { registerCleanup, runOk } from "./guest.js";

export const QEMU_BINARY = "qemu-system-x86_64";
const BEGIN_MARKER = "=== netslot-check begin ===";
const END_MARKER = "=== netslot-check end ===";

export interface GuestImage {
  kernel: string;
  initramfs: string;
}

/** True when qemu-system-x86_64 is on PATH. */
export function qemuAvailable(): boolean {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    try {
      fs.accessSync(path.join(dir, QEMU_BINARY), fs.constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

const images = new Map<string, Promise<GuestImage>>();

/**
 * Runs scripts/build-guest-image.sh (cached: a no-op after the first build; the first one
 * downloads Debian's kernel package, ~70 MB) and returns the image paths.
 */
export function ensureGuestImage(cacheDir = path.join(REPO_ROOT, ".cache", "guest")): Promise<GuestImage> {
  let image = images.get(cacheDir);
  if (!image) {
    image = (async () => {
      await runOk([path.join(REPO_ROOT, "scripts", "build-guest-image.sh"), cacheDir], { timeoutMs: 600_000 });
      return { kernel: path.join(cacheDir, "vmlinuz"), initramfs: path.join(cacheDir, "initramfs.cpio.gz") };
    })();
    images.set(cacheDir, image);
    image.catch(() => images.delete(cacheDir));
  }
  return image;
}

/** One regular file in a cpio "newc" archive (the initramfs format). */
function cpioEntry(name: string, mode: number, data: Buffer, ino: number): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  const fields = [ino, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
  const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, "0")).join("")}`);
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  return Buffer.concat([header, nameBytes, pad(header.length + nameBytes.length), data, pad(data.length)]);
}

/** A newc archive with /check.sh, to append to the base initramfs. */
export function checkArchive(script: string): Buffer {
  return Buffer.concat([
    cpioEntry("check.sh", 0o100755, Buffer.from(script), 1),
    cpioEntry("TRAILER!!!", 0, Buffer.alloc(0), 0),
  ]);
}

/** `RESULT name=value` lines (the last value of a name wins). */
export function parseMarkers(output: string): Record<string, string> {
  const markers: Record<string, string> = {};
  for (const line of output.split("\n")) {
    const m = /^RESULT ([A-Za-z0-9_.-]+)=(.*)$/.exec(line.replace(/\r$/, ""));
    if (m) markers[m[1]!] = m[2]!;
  }
  return markers;
}

export interface RunGuestOptions {
  /** The slot's namespace; QEMU runs inside it and attaches its tap0. */
  slotNetnsPath: string;
  /** Shell script run by the guest as /check.sh; print `RESULT name=value` lines. */
  script: string;
  /** QEMU is killed after this long; default 60 s. */
  timeoutMs?: number;
  /** Guest MAC (virtio-net device and eth0); default GUEST_MAC. */
  mac?: string;
  /** eth0's MTU (the lease's MTU); default the kernel's 1500. */
  mtu?: number;
  /** Default: ensureGuestImage(). */
  image?: GuestImage;
}

export interface GuestRun {
  /** Serial console output, \r\n normalised to \n. */
  output: string;
  /** Lines between the check markers (what /check.sh printed, plus RESULT exit=<code>). */
  checkOutput: string;
  markers: Record<string, string>;
  /** From QEMU's start to the begin marker (boot + virtio-net up + address configured). */
  bootMs: number;
  /** From QEMU's start to its exit. */
  totalMs: number;
}

export class GuestTimeoutError extends Error {
  constructor(
    readonly timeoutMs: number,
    readonly output: string,
  ) {
    super(`guest did not finish within ${timeoutMs} ms; console tail:\n${output.slice(-2000)}`);
    this.name = "GuestTimeoutError";
  }
}

/** Boots a guest on the slot, runs `script` in it and returns its console output and markers. */
export async function runGuest(opts: RunGuestOptions): Promise<GuestRun> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const mac = opts.mac ?? GUEST_MAC;
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) throw new Error(`bad MAC: ${mac}`);
  if (!fs.existsSync(opts.slotNetnsPath)) throw new Error(`slot namespace ${opts.slotNetnsPath} does not exist`);
  const image = opts.image ?? (await ensureGuestImage());

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-guest-"));
  try {
    // Base archive, zero padding to a 4-byte boundary (the kernel looks for the next
    // archive's magic only there and skips zeros), then the per-test archive.
    const base = fs.readFileSync(image.initramfs);
    const initrd = path.join(dir, "initrd");
    fs.writeFileSync(initrd, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), checkArchive(opts.script)]));

    let cmdline = `console=ttyS0 quiet panic=-1 reboot=t netslot.mac=${mac}`;
    if (opts.mtu !== undefined) cmdline += ` netslot.mtu=${opts.mtu}`;
    // -display none/-monitor none rather than -nographic: -nographic already puts a
    // monitor on stdio, and QEMU 7.2 then refuses `-serial stdio`.
    const args = [
      `--net=${opts.slotNetnsPath}`,
      "--",
      QEMU_BINARY,
      "-M", "pc",
      "-accel", "tcg",
      "-m", "256",
      "-display", "none",
      "-monitor", "none",
      "-serial", "stdio",
      "-no-reboot",
      "-kernel", image.kernel,
      "-initrd", initrd,
      "-append", cmdline,
      "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
      "-device", `virtio-net-pci,netdev=n0,mac=${mac}`,
    ];

    const start = performance.now();
    // nsenter execs QEMU in place, so the child's pid is QEMU's own.
    const child = spawn("nsenter", args, { stdio: ["ignore", "pipe", "pipe"] });
    const unregister = registerCleanup(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    });
    let output = "";
    let stderr = "";
    let bootMs = -1;
    child.stdout.on("data", (b: Buffer) => {
      output += b.toString();
      if (bootMs < 0 && output.includes(BEGIN_MARKER)) bootMs = performance.now() - start;
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code, signal) => resolve({ code, signal }));
    }).finally(() => {
      clearTimeout(timer);
      unregister();
    });
    const totalMs = performance.now() - start;
    output = output.replace(/\r\n/g, "\n");

    if (timedOut) throw new GuestTimeoutError(timeoutMs, output + stderr);
    if (exit.code !== 0) {
      throw new Error(`qemu exited (${exit.signal ?? exit.code}): ${stderr.trim()}\n${output.slice(-2000)}`);
    }
    const begin = output.indexOf(BEGIN_MARKER);
    const end = output.indexOf(END_MARKER, begin);
    if (begin < 0 || end < 0) throw new Error(`guest finished without check markers; console tail:\n${output.slice(-2000)}`);
    const checkOutput = output.slice(begin + BEGIN_MARKER.length + 1, end);
    return { output, checkOutput, markers: parseMarkers(checkOutput), bootMs, totalMs };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
