// A stub resolver for tests, run where the guest is (a stand-in's namespace): asks SERVER
// for NAME's A (or AAAA) records over UDP, or over TCP with RFC 7766 framing, the given
// number of times on one connection. Prints one JSON line: an array of
// {id, rcode, tc, addresses} (one per query), or {timeout: true}.
//   node dns-query.js NAME SERVER [--aaaa] [--tcp] [--repeat N]
import * as dgram from "node:dgram";
import * as net from "node:net";

const [name, server] = [process.argv[2]!, process.argv[3]!];
const aaaa = process.argv.includes("--aaaa");
const tcp = process.argv.includes("--tcp");
const repeatAt = process.argv.indexOf("--repeat");
const repeat = repeatAt > 0 ? Number(process.argv[repeatAt + 1]) : 1;

function query(id: number): Buffer {
  return Buffer.concat([
    Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
    Buffer.from([0, 0, aaaa ? 28 : 1, 0, 1]),
  ]);
}

interface Reply {
  id: number;
  rcode: number;
  tc: boolean;
  addresses: string[];
}

function read(m: Buffer): Reply {
  const an = m.readUInt16BE(6);
  const addresses: string[] = [];
  let p = 12;
  while (m[p]) p += 1 + m[p]!;
  p += 5;
  for (let i = 0; i < an; i++) {
    p += 2; // a compressed name (the test server's)
    const type = m.readUInt16BE(p);
    const len = m.readUInt16BE(p + 8);
    p += 10;
    const data = m.subarray(p, p + len);
    if (type === 1) addresses.push([...data].join("."));
    if (type === 28) addresses.push(new net.SocketAddress({ address: data.toString("hex").replace(/(.{4})(?!$)/g, "$1:"), family: "ipv6" }).address);
    p += len;
  }
  return { id: m.readUInt16BE(0), rcode: m[3]! & 15, tc: (m[2]! & 2) !== 0, addresses };
}

const timer = setTimeout(() => {
  console.log(JSON.stringify({ timeout: true }));
  process.exit(0);
}, 3000);
const replies: Reply[] = [];
const finish = () => {
  clearTimeout(timer);
  console.log(JSON.stringify(replies));
  process.exit(0);
};

if (tcp) {
  const sock = net.connect(53, server);
  sock.on("error", () => undefined);
  sock.on("connect", () => {
    // Every query at once: the server must answer each on the same connection.
    for (let i = 0; i < repeat; i++) {
      const q = query(0x1234 + i);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(q.length, 0);
      sock.write(Buffer.concat([len, q]));
    }
  });
  let buf = Buffer.alloc(0);
  sock.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      replies.push(read(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      buf = buf.subarray(2 + buf.readUInt16BE(0));
      if (replies.length === repeat) finish();
    }
  });
} else {
  const s = dgram.createSocket("udp4");
  s.on("message", (m) => {
    replies.push(read(m));
    if (replies.length === repeat) finish();
  });
  for (let i = 0; i < repeat; i++) s.send(query(0x1234 + i), 53, server);
}
