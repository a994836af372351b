// sd_notify(3) without libsystemd: one datagram to the unix socket systemd names in
// $NOTIFY_SOCKET (a path, or an abstract name written with a leading "@"). Node's dgram
// has no unix sockets, hence libc's socket/sendto. A no-op when not run by systemd.
import * as libc from "./libc.js";

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
  const addr = libc.sockaddrUn(name);
  const fd = libc.socket(libc.AF_UNIX, libc.SOCK_DGRAM, 0);
  try {
    libc.sendto(fd, Buffer.from(state), libc.MSG_NOSIGNAL, addr);
    return true;
  } catch (err) {
    throw new Error(`sd_notify to ${notifySocket}: ${(err as Error).message}`, { cause: err });
  } finally {
    libc.close(fd);
  }
}
