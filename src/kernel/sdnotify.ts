// sd_notify(3) without libsystemd: one datagram to the unix socket systemd names in
// $NOTIFY_SOCKET (a path, or an abstract name written with a leading "@"). Node's dgram
// has no unix sockets, hence the three libc calls. A no-op when not run by systemd.
import koffi from "koffi";

const libc = koffi.load("libc.so.6");
const socket = libc.func("int socket(int domain, int type, int protocol)");
const sendto = libc.func("intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)");
const close = libc.func("int close(int fd)");
const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): 2 bytes of family, 108 of path. */
const SUN_PATH_MAX = 108;

/**
 * Sends `state` (e.g. "READY=1\nMAINPID=123") to systemd. Returns false when there is no
 * $NOTIFY_SOCKET (not under systemd, or not Type=notify); throws when sending fails.
 */
export function sdNotify(state: string, notifySocket = process.env.NOTIFY_SOCKET): boolean {
  if (!notifySocket) return false;
  const name = Buffer.from(notifySocket.startsWith("@") ? `\0${notifySocket.slice(1)}` : notifySocket);
  if (name.length >= SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET ${notifySocket} is too long`);
  const addr = Buffer.alloc(2 + name.length + (notifySocket.startsWith("@") ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  const fd = Number(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd < 0) throw new Error(`sd_notify: socket: errno ${koffi.errno()}`);
  try {
    const message = Buffer.from(state);
    const sent = Number(sendto(fd, message, message.length, MSG_NOSIGNAL, addr, addr.length));
    if (sent < 0) throw new Error(`sd_notify to ${notifySocket}: sendto: errno ${koffi.errno()}`);
    return true;
  } finally {
    close(fd);
  }
}
