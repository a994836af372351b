// The API's listening socket, made with socket/bind/listen directly. Why not
// net.Server.listen(path): libuv remembers a path it bound and unlinks it when the server
// closes. In a handover the old daemon closes its listener while the new one keeps
// accepting on the same socket: that unlink would take the socket's name away from the
// new daemon. A listener Node gets as a descriptor has no path to unlink; the daemon
// removes the name itself when it stops (only if it is still its socket).
import koffi from "koffi";

const libc = koffi.load("libc.so.6");
const socket = libc.func("int socket(int domain, int type, int protocol)");
const bind = libc.func("int bind(int fd, const void *addr, uint32_t len)");
const listen = libc.func("int listen(int fd, int backlog)");
const close = libc.func("int close(int fd)");
const strerror = libc.func("const char *strerror(int errnum)");
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SUN_PATH_MAX = 108;

/** A listening unix stream socket bound at `path` (which must not exist); returns its descriptor. */
export function listenUnix(path: string, backlog = 511): number {
  const name = Buffer.from(path);
  if (name.length >= SUN_PATH_MAX) throw new Error(`socket path ${path} is longer than ${SUN_PATH_MAX - 1} bytes`);
  const addr = Buffer.alloc(2 + name.length + 1);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  const fd = Number(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd < 0) throw new Error(`socket: ${String(strerror(koffi.errno()))}`);
  if (Number(bind(fd, addr, addr.length)) < 0 || Number(listen(fd, backlog)) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new Error(`cannot listen on ${path}: ${String(strerror(errno))}`);
  }
  return fd;
}
