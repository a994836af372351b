// Persistent tap devices through /dev/net/tun. There is no rtnetlink way to create a tap:
// the device is made by TUNSETIFF in the namespace the thread is in, then TUNSETPERSIST
// keeps it after the descriptor closes, ready for the VMM to attach.
import * as fs from "node:fs";
import * as libc from "./libc.js";

const TUNSETIFF = 0x400454ca;
const TUNSETPERSIST = 0x400454cb;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;

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
