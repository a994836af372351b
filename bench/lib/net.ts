// Namespaces and traffic for the benchmarks: TCP listeners inside namespaces, connect
// latency loops, iperf3 runs, and a plain routed namespace pair (no netslot, no NAT) to
// compare the data path against. Traffic only goes to namespaces created here.
import { spawn, type ChildProcess } from "node:child_process";
import * as net from "node:net";
import { sh, sleep, stopChild, waitForOutput } from "../../test/support/env.js";
import { errorText, now, runAsync, summarize, type Summary } from "./util.js";

export interface Listener {
  port: number;
  stop(): Promise<void>;
}

/** A TCP server in `netns` that accepts and closes at once (node, no extra packages). */
export async function startTcpListener(netns: string, port: number): Promise<Listener> {
  const script = `require("net").createServer((s)=>{s.on("error",()=>{});s.end();}).listen(${port},"0.0.0.0",()=>console.log("listening"));`;
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  await started(child, "listening", 10_000);
  return { port, stop: () => killAndWait(child) };
}

/** The child's marker, or the child killed and the reason thrown. */
async function started(child: ChildProcess, marker: string, timeoutMs: number): Promise<void> {
  try {
    await waitForOutput(child, marker, { timeoutMs });
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
}

const killAndWait = (child: ChildProcess): Promise<void> => stopChild(child, "SIGTERM", 2000);

/** Sequential TCP connects from this process (root namespace); handshake time each. */
export async function connectLatency(host: string, port: number, count: number, timeoutMs = 2000): Promise<{ ms: Summary; failures: number; firstError?: string }> {
  const samples: number[] = [];
  let failures = 0;
  let firstError: string | undefined;
  for (let i = 0; i < count; i++) {
    try {
      samples.push(await connectOnce(host, port, timeoutMs));
    } catch (err) {
      failures++;
      firstError ??= errorText(err);
      if (failures >= 5 && samples.length === 0) break;
    }
  }
  return { ms: summarize(samples), failures, ...(firstError ? { firstError } : {}) };
}

/** Connects alternately to two targets, so drift over the run hits both the same. */
export async function connectLatencyInterleaved(
  a: { host: string; port: number },
  b: { host: string; port: number },
  count: number,
): Promise<[{ ms: Summary; failures: number; firstError?: string }, { ms: Summary; failures: number; firstError?: string }]> {
  const samples: [number[], number[]] = [[], []];
  const failures = [0, 0];
  const firstError: [string | undefined, string | undefined] = [undefined, undefined];
  const targets = [a, b];
  for (let i = 0; i < count * 2; i++) {
    const k = i % 2;
    const t = targets[k]!;
    try {
      samples[k]!.push(await connectOnce(t.host, t.port, 2000));
    } catch (err) {
      failures[k]!++;
      firstError[k] ??= errorText(err);
      if (failures[k]! >= 5 && samples[k]!.length === 0) break;
    }
  }
  const out = (k: 0 | 1) => ({ ms: summarize(samples[k]), failures: failures[k]!, ...(firstError[k] ? { firstError: firstError[k] } : {}) });
  return [out(0), out(1)];
}

function connectOnce(host: string, port: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = now();
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    sock.once("connect", () => {
      const dt = now() - t;
      clearTimeout(timer);
      sock.destroy();
      resolve(dt);
    });
    sock.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** The same loop run by node inside `netns` (e.g. the guest stand-in), to a server elsewhere. */
export async function connectLatencyFrom(netns: string, host: string, port: number, count: number): Promise<{ ms: Summary; failures: number; firstError?: string }> {
  const script = `
const net=require("net");const out=[];let fail=0,first;
const once=()=>new Promise((res,rej)=>{const t=process.hrtime.bigint();const s=net.connect({host:${JSON.stringify(host)},port:${port}});
const tm=setTimeout(()=>{s.destroy();rej(new Error("timeout"))},2000);
s.once("connect",()=>{clearTimeout(tm);s.destroy();res(Number(process.hrtime.bigint()-t)/1e6)});s.once("error",(e)=>{clearTimeout(tm);rej(e)})});
(async()=>{for(let i=0;i<${count};i++){try{out.push(await once())}catch(e){fail++;first??=String(e.message);if(fail>=5&&out.length===0)break}}
console.log(JSON.stringify({out,fail,first}))})();`;
  const r = await runAsync("ip", ["netns", "exec", netns, process.execPath, "-e", script], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`connect loop in ${netns} failed: ${r.stderr.trim()}`);
  const parsed = JSON.parse(r.stdout.trim().split("\n").pop()!) as { out: number[]; fail: number; first?: string };
  return { ms: summarize(parsed.out), failures: parsed.fail, ...(parsed.first ? { firstError: parsed.first } : {}) };
}

export interface IperfResult {
  bitsPerSecond: number;
  retransmits: number | undefined;
  seconds: number;
  reverse: boolean;
}

/** iperf3 from `clientNetns` to a one-shot server in `serverNetns` at `serverAddress`. */
export async function iperf3(opts: {
  clientNetns: string;
  serverNetns: string;
  serverAddress: string;
  port: number;
  seconds: number;
  reverse?: boolean;
}): Promise<IperfResult> {
  const server = spawn("ip", ["netns", "exec", opts.serverNetns, "iperf3", "-s", "-1", "-p", String(opts.port)], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    for (let i = 0; i < 200; i++) {
      const ss = sh("ip", ["netns", "exec", opts.serverNetns, "ss", "-Hltn", `sport = :${opts.port}`], { allowFail: true });
      if (ss.trim() !== "") break;
      await sleep(10);
    }
    const args = ["netns", "exec", opts.clientNetns, "iperf3", "-c", opts.serverAddress, "-p", String(opts.port), "-t", String(opts.seconds), "-J", "--connect-timeout", "5000"];
    if (opts.reverse) args.push("-R");
    const r = await runAsync("ip", args, { timeoutMs: (opts.seconds + 30) * 1000 });
    let doc: {
      error?: string;
      end?: { sum_received?: { bits_per_second?: number; seconds?: number }; sum_sent?: { retransmits?: number } };
    };
    try {
      doc = JSON.parse(r.stdout) as typeof doc;
    } catch {
      throw new Error(`iperf3 gave no JSON (exit ${r.code}): ${r.stderr.trim() || r.stdout.slice(0, 300)}`);
    }
    if (doc.error) throw new Error(`iperf3: ${doc.error}`);
    const recv = doc.end?.sum_received;
    if (!recv?.bits_per_second) throw new Error("iperf3 reported no throughput");
    return { bitsPerSecond: recv.bits_per_second, retransmits: doc.end?.sum_sent?.retransmits, seconds: recv.seconds ?? opts.seconds, reverse: opts.reverse === true };
  } finally {
    await killAndWait(server);
  }
}

export interface PlainPath {
  /** Namespace that plays the slot: a veth to the root namespace, a tap0, plain routing. */
  netns: string;
  /** Its own address on the veth (routed by the root namespace, no NAT). */
  address: string;
  guestAddress: string;
  guestGateway: string;
  remove(): void;
}

/**
 * `ip netns add N; ip link add Nv type veth peer name eth0 netns N; ip tuntap add tap0`, with
 * addresses from 198.19.0.0/16 and a root route to the guest network: the same hops as a
 * slot, without netslot's NAT, firewall or eBPF.
 */
export function createPlainPath(name: string, mtu: number): PlainPath {
  const x = 1 + Math.floor(Math.random() * 250);
  const hostAddr = `198.19.${x}.1`;
  const nsAddr = `198.19.${x}.2`;
  const tapAddr = `198.19.${x}.129`;
  const guestAddr = `198.19.${x}.130`;
  const veth = `${name}v`;
  sh("ip", ["netns", "add", name]);
  const remove = () => {
    sh("ip", ["route", "del", `198.19.${x}.128/30`], { allowFail: true });
    sh("ip", ["link", "del", veth], { allowFail: true });
    sh("ip", ["netns", "del", name], { allowFail: true });
  };
  try {
    sh("ip", ["link", "add", veth, "mtu", String(mtu), "type", "veth", "peer", "name", "eth0", "netns", name, "mtu", String(mtu)]);
    sh("ip", ["addr", "add", `${hostAddr}/30`, "dev", veth]);
    sh("ip", ["link", "set", veth, "up"]);
    sh("ip", ["-n", name, "-batch", "-"], {
      input: [
        "link set lo up",
        `addr add ${nsAddr}/30 dev eth0`,
        "link set eth0 up",
        `tuntap add dev tap0 mode tap vnet_hdr`,
        `link set tap0 mtu ${mtu}`,
        `addr add ${tapAddr}/30 dev tap0`,
        "link set tap0 up",
        `route add default via ${hostAddr}`,
        "",
      ].join("\n"),
    });
    sh("ip", ["netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    sh("ip", ["route", "add", `198.19.${x}.128/30`, "via", nsAddr, "dev", veth]);
  } catch (err) {
    remove();
    throw err;
  }
  return { netns: name, address: nsAddr, guestAddress: guestAddr, guestGateway: tapAddr, remove };
}
