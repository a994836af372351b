// Persistent tap devices through /dev/net/tun. There is no rtnetlink way to create a tap:
// the device is made by TUNSETIFF in the namespace the thread is in, then TUNSETPERSIST
// keeps it after the descriptor closes, ready for the VMM to attach.
import * as fs from "node:fs";
import * as libc from "./libc.js";

const TUNSETIFF = 0x400454ca;
const TUNSETPERSIST = 0x400454cb;
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETTXFILTER = 0x400454d1;
const TUNGETSNDBUF = 0x800454d3;
const TUNSETSNDBUF = 0x400454d4;
const TUNATTACHFILTER = 0x401054d5;
const TUNDETACHFILTER = 0x401054d6;
const TUNGETVNETHDRSZ = 0x800454d7;
const TUNSETVNETHDRSZ = 0x400454d8;
const TUNGETFILTER = 0x801054db;
const TUNSETVNETLE = 0x400454dc;
const TUNGETVNETLE = 0x800454dd;
const TUNSETVNETBE = 0x400454de;
const TUNGETVNETBE = 0x800454df;
const TUNSETSTEERINGEBPF = 0x800454e0;
const TUNSETFILTEREBPF = 0x800454e1;
const SIOCETHTOOL = 0x8946;
const ETHTOOL_GFEATURES = 0x3a;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
/** The flags netslot creates tap0 with; attaching with them also puts back the tun flags a VMM changed. */
const TAP_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
/** sizeof(struct virtio_net_hdr): the vnet header size of a fresh tap. */
const DEFAULT_VNET_HDR_SZ = 10;
const INT_MAX = 0x7fffffff;
const EBUSY = 16;
const EINVAL = 22;
const EAGAIN = 11;
const SOL_PACKET = 263;
const AF_UNIX = 1;
const PACKET_QDISC_BYPASS = 20;

function ifreq(name: string, flags: number): Buffer {
  if (Buffer.byteLength(name) > 15) throw new Error(`interface name too long: ${name}`);
  const buf = Buffer.alloc(40);
  buf.write(name, 0, "latin1");
  buf.writeUInt16LE(flags, 16);
  return buf;
}

/**
 * `ip tuntap add NAME mode tap vnet_hdr` in the current namespace. The vnet header flag
 * matches what Firecracker and QEMU ask for when they attach.
 */
export function createPersistentTap(name: string): void {
  const fd = libc.open("/dev/net/tun", libc.O_RDWR);
  try {
    libc.ioctl(fd, TUNSETIFF, ifreq(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR));
    libc.ioctlInt(fd, TUNSETPERSIST, 1);
  } finally {
    libc.close(fd);
  }
}

/** Attaches to an existing tap with netslot's flags; undefined when a VMM holds it (EBUSY). */
function attach(name: string): number | undefined {
  const fd = libc.open("/dev/net/tun", libc.O_RDWR | libc.O_NONBLOCK);
  const r = libc.ioctlErrno(fd, TUNSETIFF, ifreq(name, TAP_FLAGS));
  if (r === -EBUSY) {
    libc.close(fd);
    return undefined;
  }
  if (r < 0) {
    libc.close(fd);
    throw new libc.SyscallError("ioctl(TUNSETIFF)", -r, name);
  }
  return fd;
}

function intArg(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value | 0);
  return b;
}

/**
 * Puts every setting a VMM can make through the tap's fd, and that outlives that fd,
 * back to what a fresh tap has: tun flags (by attaching with netslot's), the TX filter,
 * the classic socket filter (detached, and its saved program cleared so that the next
 * attach does not re-apply it), the eBPF filter and steering programs, offloads, vnet
 * header size and endianness, send buffer. Carrier and queue state end with the last
 * descriptor. Owner and group cannot be put back (TUNSETOWNER refuses "nobody", which a
 * fresh tap has): the fingerprint shows them (rtnetlink) and the slot is rebuilt. About 15 ioctls on one descriptor; no device change, so the
 * tap's firewall, address and routes stay as they are. Returns false when a process
 * still holds the tap (nothing is reset then). Returns the fd-only settings read back
 * after the reset (tapState's, without the probe), or undefined when a process still
 * holds the tap (nothing is reset then).
 */
export function resetTap(name: string): Record<string, string> | undefined {
  const fd = attach(name);
  if (fd === undefined) return undefined;
  try {
    libc.ioctl(fd, TUNSETTXFILTER, Buffer.alloc(4)); // flags 0, count 0: no filter
    libc.ioctl(fd, TUNDETACHFILTER, Buffer.alloc(16));
    // An empty program fails to attach (EINVAL) but replaces the saved one, which
    // TUNGETFILTER shows and a later attach would otherwise re-apply.
    libc.ioctlErrno(fd, TUNATTACHFILTER, Buffer.alloc(16));
    libc.ioctl(fd, TUNSETFILTEREBPF, intArg(-1));
    libc.ioctl(fd, TUNSETSTEERINGEBPF, intArg(-1));
    libc.ioctlInt(fd, TUNSETOFFLOAD, 0);
    libc.ioctl(fd, TUNSETVNETHDRSZ, intArg(DEFAULT_VNET_HDR_SZ));
    libc.ioctl(fd, TUNSETVNETLE, intArg(0));
    const be = libc.ioctlErrno(fd, TUNSETVNETBE, intArg(0)); // EINVAL: no cross-endian support built
    if (be < 0 && be !== -EINVAL) throw new libc.SyscallError("ioctl(TUNSETVNETBE)", -be, name);
    libc.ioctl(fd, TUNSETSNDBUF, intArg(INT_MAX));
    return fdState(fd, name);
  } finally {
    libc.close(fd);
  }
}

/**
 * What a tap's fd-only settings are now, for the fingerprint: vnet header size and
 * endianness, send buffer, the saved socket filter's length, active offload features
 * (ethtool feature words), and whether a frame addressed to the guest reaches the tap's
 * reader (a TX filter, socket filter or eBPF filter that drops it shows here: the kernel
 * has no getter for those). `held` when a process holds the tap (nothing read).
 */
export function tapState(name: string, ifindex: number, probe: Buffer | undefined): Record<string, string> {
  const fd = attach(name);
  if (fd === undefined) return { "tun.fd_state": "held" };
  try {
    return { ...fdState(fd, name), ...(probe ? { "tun.delivers_to_guest": deliversFrame(fd, ifindex, probe) ? "yes" : "no" } : {}) };
  } finally {
    libc.close(fd);
  }
}

/** The getters of tapState on an attached fd. */
function fdState(fd: number, name: string): Record<string, string> {
  const int = (req: number): string => {
    const b = Buffer.alloc(4);
    const r = libc.ioctlErrno(fd, req, b);
    return r < 0 ? `errno ${-r}` : String(b.readInt32LE(0));
  };
  const fprog = Buffer.alloc(16);
  libc.ioctl(fd, TUNGETFILTER, fprog);
  return {
    "tun.vnet_hdr_sz": int(TUNGETVNETHDRSZ),
    "tun.vnet_le": int(TUNGETVNETLE),
    "tun.vnet_be": int(TUNGETVNETBE),
    "tun.sndbuf": int(TUNGETSNDBUF),
    "tun.socket_filter_len": String(fprog.readUInt16LE(0)),
    "tun.features": activeFeatures(name),
  };
}

/** The device's active features (ETHTOOL_GFEATURES), as hex words: offloads a VMM turned on show here. */
function activeFeatures(name: string): string {
  const words = 4;
  const data = Buffer.alloc(8 + 16 * words);
  data.writeUInt32LE(ETHTOOL_GFEATURES, 0);
  data.writeUInt32LE(words, 4);
  const req = Buffer.alloc(40);
  req.write(name, 0, "latin1");
  req.writeBigUInt64LE(libc.addressOf(data), 16);
  // Any socket reaches the device ioctls of its namespace; closing a unix one is free,
  // where a packet socket's close waits for an RCU grace period.
  const sock = libc.socket(AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC, 0);
  try {
    libc.ioctl(sock, SIOCETHTOOL, req);
  } finally {
    libc.close(sock);
  }
  const active: string[] = [];
  for (let i = 0; i < Math.min(words, data.readUInt32LE(4)); i++) active.push(data.readUInt32LE(8 + 16 * i + 8).toString(16));
  return active.join(",");
}

/** Sends `frame` out of the tap with a packet socket and looks for it on the tap's fd. */
function deliversFrame(fd: number, ifindex: number, frame: Buffer): boolean {
  const sock = libc.socket(libc.AF_PACKET, libc.SOCK_RAW | libc.SOCK_CLOEXEC, 0);
  try {
    const sll = Buffer.alloc(20);
    sll.writeUInt16LE(libc.AF_PACKET, 0);
    sll.writeInt32LE(ifindex, 4);
    libc.bind(sock, sll);
    // Straight to the driver: right after the attach the qdisc may still be the no-op one
    // (link watch activates the real one a moment after carrier comes on).
    libc.setsockoptInt(sock, SOL_PACKET, PACKET_QDISC_BYPASS, 1);
    libc.send(sock, frame);
  } finally {
    libc.close(sock);
  }
  const buf = Buffer.alloc(2048);
  // The frame is usually queued by the time send returns; when the qdisc defers it to
  // the transmit softirq (a busy host), it comes a little later: wait up to 250 ms.
  const deadline = performance.now() + 250;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const n = libc.readRaw(fd, buf);
    if (n > 0 && buf.subarray(0, n).includes(frame)) return true;
    if (n < 0 && n !== -EAGAIN) return false;
    if (n < 0) {
      if (performance.now() > deadline) return false;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

/** Processes holding a tap open, found through /proc/<pid>/fdinfo (`iff:` line). */
export function tapHolders(tapName: string, netnsInode: number): number[] {
  const holders: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      // The tap name repeats in every slot: only count holders whose fd sits in this slot's
      // namespace... which fdinfo does not say, so compare the holder's own namespace.
      const nsInode = fs.statSync(`/proc/${pid}/ns/net`).ino;
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        let target: string;
        try {
          target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        if (target !== "/dev/net/tun") continue;
        const info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, "latin1");
        if (info.includes(`iff:\t${tapName}`) && nsInode === netnsInode) holders.push(pid);
      }
    } catch {
      // The process went away while we looked.
    }
  }
  return holders;
}
