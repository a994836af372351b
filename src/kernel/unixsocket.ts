// The API's listening socket, made with socket/bind/listen directly. Why not
// net.Server.listen(path): libuv remembers a path it bound and unlinks it when the server
// closes. In a handover the old daemon closes its listener while the new one keeps
// accepting on the same socket: that unlink would take the socket's name away from the
// new daemon. A listener Node gets as a descriptor has no path to unlink; the daemon
// removes the name itself when it stops (only if it is still its socket).
import * as libc from "./libc.js";

const SUN_PATH_MAX = 108;

/** A listening unix stream socket bound at `path` (which must not exist); returns its descriptor. */
export function listenUnix(path: string, backlog = 511): number {
  const name = Buffer.from(path);
  if (name.length >= SUN_PATH_MAX) throw new Error(`socket path ${path} is longer than ${SUN_PATH_MAX - 1} bytes`);
  const addr = libc.sockaddrUn(name);
  const fd = libc.socket(libc.AF_UNIX, libc.SOCK_STREAM, 0);
  try {
    libc.bind(fd, addr);
    libc.listen(fd, backlog);
  } catch (err) {
    libc.close(fd);
    throw new Error(`cannot listen on ${path}: ${libc.strerror((err as libc.SyscallError).errno)}`, { cause: err });
  }
  return fd;
}
