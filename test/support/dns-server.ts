// A tiny authoritative DNS server for tests, run inside a test's upstream namespace: fixed
// A/AAAA records over UDP and TCP (RFC 7766 framing, several queries per connection). A UDP
// answer longer than 512 bytes is truncated to its question with TC set, as a real server
// does, so a client has to ask again over TCP. Run as a script:
//   node dns-server.js ADDRESS RECORDS_JSON TTL
// RECORDS_JSON: {"name": ["192.0.2.1", "2001:db8::1", …]}; other names get NXDOMAIN.
// Prints "listening" once both sockets are bound, and one line per query ("udp name type").
import * as dgram from "node:dgram";
import * as net from "node:net";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { isIPv6 } from "node:net";

const TYPE_A = 1;
const TYPE_AAAA = 28;

function ipv6Bytes(text: string): Buffer {
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** The answer to `q` from `records`; `udp`: truncate past 512 bytes. */
export function answer(q: Buffer, records: Record<string, string[]>, ttl: number, udp: boolean): { reply: Buffer; name: string; type: number } {
  let p = 12;
  const labels: string[] = [];
  while (q[p]) {
    labels.push(q.toString("latin1", p + 1, p + 1 + q[p]!));
    p += 1 + q[p]!;
  }
  const type = q.readUInt16BE(p + 1);
  const qend = p + 5;
  const name = labels.join(".").toLowerCase();
  const addresses = records[name];
  const matching = (addresses ?? []).filter((a) => (type === TYPE_AAAA ? isIPv6(a) : type === TYPE_A ? !isIPv6(a) : false));
  const head = Buffer.from(q.subarray(0, qend));
  head.writeUInt16BE(0x8180 | (addresses ? 0 : 3), 2); // NXDOMAIN for unknown names
  head.writeUInt16BE(matching.length, 6);
  head.writeUInt16BE(0, 8);
  head.writeUInt16BE(0, 10);
  const rrs = matching.map((a) => {
    const data = isIPv6(a) ? ipv6Bytes(a) : Buffer.from(a.split(".").map(Number));
    const rr = Buffer.alloc(12 + data.length);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(isIPv6(a) ? TYPE_AAAA : TYPE_A, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(data.length, 10);
    data.copy(rr, 12);
    return rr;
  });
  let reply = Buffer.concat([head, ...rrs]);
  if (udp && reply.length > 512) {
    reply = Buffer.from(head);
    reply.writeUInt16BE(reply.readUInt16BE(2) | 0x0200, 2); // TC
    reply.writeUInt16BE(0, 6);
  }
  return { reply, name, type };
}

/** Serves `records` on address:port over UDP and TCP; resolves with the port once both listen. */
export async function serve(address: string, records: Record<string, string[]>, ttl: number, port = 53, log: (line: string) => void = console.log): Promise<{ port: number; close(): void }> {
  const udp = dgram.createSocket("udp4");
  udp.on("message", (q, r) => {
    const a = answer(q, records, ttl, true);
    log(`udp ${a.name} ${a.type}`);
    udp.send(a.reply, r.port, r.address);
  });
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    let buf = Buffer.alloc(0);
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const q = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + q.length);
        const a = answer(q, records, ttl, false);
        log(`tcp ${a.name} ${a.type}`);
        const len = Buffer.alloc(2);
        len.writeUInt16BE(a.reply.length, 0);
        sock.write(Buffer.concat([len, a.reply]));
      }
    });
    sock.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => tcp.listen(port, address, resolve));
  const bound = (tcp.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => udp.bind(bound, address, resolve));
  return {
    port: bound,
    close: () => {
      udp.close();
      tcp.close();
      for (const s of sockets) s.destroy();
    },
  };
}

export interface DnsServer {
  /** The query lines printed so far ("udp name type"). */
  queries(): string[];
  stop(): void;
}

/** Starts the server inside `netns` on `address`:53; resolves once it listens. */
export async function startDnsServer(netns: string, address: string, records: Record<string, string[]>, ttl: number): Promise<DnsServer> {
  const child: ChildProcess = spawn("ip", ["netns", "exec", netns, process.execPath, fileURLToPath(import.meta.url), address, JSON.stringify(records), String(ttl)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      clearInterval(check);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error("the test DNS server did not start")), 10_000);
    const check = setInterval(() => out.includes("listening") && done(), 20);
    child.once("exit", (code) => done(new Error(`the test DNS server exited (${code})`)));
  }).catch((err: unknown) => {
    child.kill("SIGKILL");
    throw err;
  });
  return {
    queries: () => out.split("\n").filter((l) => /^(udp|tcp) /.test(l)),
    stop: () => child.kill("SIGKILL"),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  void serve(process.argv[2]!, JSON.parse(process.argv[3]!) as Record<string, string[]>, Number(process.argv[4])).then(() => console.log("listening"));
}
