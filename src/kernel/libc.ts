// libc through koffi: the one module that binds libc.so.6; the rest of netslot calls the
// typed functions here. Every binding is synchronous on purpose (the calling thread's
// network namespace matters for socket(), TUNSETIFF and /proc/sys/net, and a synchronous
// call cannot interleave with other JavaScript), except pollAsync, which waits on the
// libuv pool so that the event loop never blocks on it.
import koffi from "koffi";

const libc = koffi.load("libc.so.6");

export const CLONE_NEWNET = 0x40000000;
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_SHARED = 1 << 20;
export const MNT_DETACH = 2;
export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const AF_PACKET = 17;
export const SOCK_STREAM = 1;
export const SOCK_RAW = 3;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SOL_NETLINK = 270;
export const SO_RCVBUF = 8;
export const SO_SNDBUF = 7;
export const SO_RCVBUFFORCE = 33;
export const SO_RCVTIMEO = 20;
export const SO_PEERCRED = 17;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_GET_STRICT_CHK = 12;

const c = {
  open: libc.func("int open(const char *path, int flags, int mode)"),
  openat: libc.func("int openat(int dirfd, const char *path, int flags, int mode)"),
  close: libc.func("int close(int fd)"),
  read: libc.func("intptr_t read(int fd, _Out_ void *buf, size_t len)"),
  setns: libc.func("int setns(int fd, int nstype)"),
  unshare: libc.func("int unshare(int flags)"),
  mount: libc.func("int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)"),
  umount2: libc.func("int umount2(const char *target, int flags)"),
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  bind: libc.func("int bind(int fd, const void *addr, uint32_t len)"),
  send: libc.func("intptr_t send(int fd, const void *buf, size_t len, int flags)"),
  recv: libc.func("intptr_t recv(int fd, _Out_ void *buf, size_t len, int flags)"),
  setsockopt: libc.func("int setsockopt(int fd, int level, int name, const void *val, uint32_t len)"),
  getsockopt: libc.func("int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)"),
  getsockname: libc.func("int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)"),
  ioctlPtr: libc.func("int ioctl(int fd, unsigned long req, _Inout_ void *arg)"),
  ioctlInt: libc.func("int ioctl(int fd, unsigned long req, intptr_t arg)"),
  gettid: libc.func("int gettid(void)"),
  strerror: libc.func("const char *strerror(int errnum)"),
  syscall3: libc.func("long syscall(long nr, long a, long b, long c)"),
  syscallPtr: libc.func("long syscall(long nr, long a, void *b, long c)"),
  syscall4: libc.func("long syscall(long nr, long a, long b, void *c, long d)"),
  syscallStr: libc.func("long syscall(long nr, const char *a, long b)"),
  syscall5: libc.func("long syscall(long nr, long a, long b, long c, long d, long e)"),
  fcntl: libc.func("int fcntl(int fd, int cmd, int arg)"),
  listen: libc.func("int listen(int fd, int backlog)"),
  sendto: libc.func("intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)"),
  write: libc.func("intptr_t write(int fd, const void *buf, size_t len)"),
  eventfd: libc.func("int eventfd(unsigned int initval, int flags)"),
  poll: libc.func("poll", "int", [koffi.inout(koffi.pointer(koffi.struct("netslot_pollfd", { fd: "int", events: "short", revents: "short" }))), "unsigned long", "int"]),
  vsnprintf: libc.func("int vsnprintf(_Out_ uint8_t *buf, size_t n, const char *fmt, void *ap)"),
  inotifyInit1: libc.func("int inotify_init1(int flags)"),
  readlink: libc.func("intptr_t readlink(const char *path, _Out_ uint8_t *buf, size_t len)"),
  inotifyAddWatch: libc.func("int inotify_add_watch(int fd, const char *path, uint32_t mask)"),
  inotifyRmWatch: libc.func("int inotify_rm_watch(int fd, int wd)"),
  setpriority: libc.func("int setpriority(int which, uint32_t who, int prio)"),
  clockGettime: libc.func("int clock_gettime(int clk, _Out_ void *ts)"),
};

/** An errno from a failed system call, with the call's name: `setns: Invalid argument`. */
export class SyscallError extends Error {
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail?: string) {
    super(`${syscall}${detail ? ` ${detail}` : ""}: ${strerror(errno)} (errno ${errno})`);
    this.name = "SyscallError";
    this.errno = errno;
    this.syscall = syscall;
  }
}

export const ENOENT = 2;
export const EINTR = 4;
export const EAGAIN = 11;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSPC = 28;
export const ENOBUFS = 105;
export const ESRCH = 3;

export function strerror(errno: number): string {
  return String(c.strerror(errno));
}

function check(name: string, result: number | bigint, detail?: string): number {
  const value = Number(result);
  if (value < 0) throw new SyscallError(name, koffi.errno(), detail);
  return value;
}

export function open(path: string, flags: number, mode = 0o644): number {
  return check("open", c.open(path, flags | O_CLOEXEC, mode), path);
}

/** read(2) without exceptions: bytes read, or -errno. */
export function readRaw(fd: number, buf: Buffer): number {
  const n = Number(c.read(fd, buf, buf.length));
  return n < 0 ? -koffi.errno() : n;
}

/** open(2) without exceptions: the fd, or -errno (for hot loops where failures are expected). */
export function openRaw(path: string, flags: number): number {
  const fd = c.open(path, flags | O_CLOEXEC, 0);
  return fd < 0 ? -koffi.errno() : fd;
}

/** readlink(2) into `buf` without exceptions: the length, or -errno. */
export function readlinkRaw(path: string, buf: Buffer): number {
  const n = Number(c.readlink(path, buf, buf.length));
  return n < 0 ? -koffi.errno() : n;
}

/** A whole small file (a /proc table) read with plain open/read/close into `buf`, grown as needed; undefined when it cannot be opened. */
export function readSmallFile(path: string, buf: { b: Buffer }): string | undefined {
  const fd = openRaw(path, O_RDONLY);
  if (fd < 0) return undefined;
  try {
    let len = 0;
    for (;;) {
      if (len === buf.b.length) {
        const bigger = Buffer.allocUnsafe(buf.b.length * 2);
        buf.b.copy(bigger, 0, 0, len);
        buf.b = bigger;
      }
      const n = readRaw(fd, buf.b.subarray(len));
      if (n <= 0) break;
      len += n;
    }
    return buf.b.toString("latin1", 0, len);
  } finally {
    close(fd);
  }
}

/** openat(2) without exceptions: `path` relative to directory `dirFd`; the fd, or -errno. */
export function openAt(dirFd: number, path: string, flags: number): number {
  return check("openat", c.openat(dirFd, path, flags | O_CLOEXEC, 0), path);
}

export function openAtRaw(dirFd: number, path: string, flags: number): number {
  const fd = c.openat(dirFd, path, flags | O_CLOEXEC, 0);
  return fd < 0 ? -koffi.errno() : fd;
}

export function close(fd: number): void {
  c.close(fd);
}

export function setns(fd: number, nstype: number): void {
  check("setns", c.setns(fd, nstype));
}

export function unshare(flags: number): void {
  check("unshare", c.unshare(flags));
}

export function mount(src: string | null, target: string, fstype: string | null, flags: number): void {
  check("mount", c.mount(src, target, fstype, flags, null), target);
}

export function umount2(target: string, flags: number): void {
  check("umount2", c.umount2(target, flags), target);
}

export function socket(domain: number, type: number, protocol: number): number {
  return check("socket", c.socket(domain, type | SOCK_CLOEXEC, protocol));
}

export function bind(fd: number, addr: Buffer): void {
  check("bind", c.bind(fd, addr, addr.length));
}

export function listen(fd: number, backlog: number): void {
  check("listen", c.listen(fd, backlog));
}

export const MSG_NOSIGNAL = 0x4000;

/** sendto(2) of one datagram to `addr` (a struct sockaddr). */
export function sendto(fd: number, buf: Buffer, flags: number, addr: Buffer): number {
  return check("sendto", c.sendto(fd, buf, buf.length, flags, addr, addr.length));
}

/** struct sockaddr_un for `path`: `path` as given (a leading NUL makes it abstract), NUL-terminated unless abstract. */
export function sockaddrUn(path: Buffer): Buffer {
  const SUN_PATH_MAX = 108;
  if (path.length >= SUN_PATH_MAX) throw new Error(`unix socket name ${path.toString()} is longer than ${SUN_PATH_MAX - 1} bytes`);
  const abstract = path[0] === 0;
  const addr = Buffer.alloc(2 + path.length + (abstract ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  path.copy(addr, 2);
  return addr;
}

export function send(fd: number, buf: Buffer): number {
  return check("send", c.send(fd, buf, buf.length, 0));
}

/** Returns the number of bytes read; -errno on EAGAIN/EINTR so callers can decide. */
export function recv(fd: number, buf: Buffer, flags = 0): number {
  const n = Number(c.recv(fd, buf, buf.length, flags));
  if (n < 0) {
    const errno = koffi.errno();
    if (errno === EAGAIN || errno === EINTR) return -errno;
    throw new SyscallError("recv", errno);
  }
  return n;
}

export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(value);
  check("setsockopt", c.setsockopt(fd, level, name, buf, 4));
}

export function setsockopt(fd: number, level: number, name: number, value: Buffer): void {
  check("setsockopt", c.setsockopt(fd, level, name, value, value.length));
}

export function getsockname(fd: number, size = 16): Buffer {
  const buf = Buffer.alloc(size);
  const len = [size];
  check("getsockname", c.getsockname(fd, buf, len));
  return buf.subarray(0, len[0]);
}

/** struct ucred: the peer of a unix socket as the kernel saw it at connect(), pid in our PID namespace. */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

const ucred = Buffer.alloc(12);
const ucredLen = [12];

/** getsockopt(SO_PEERCRED). Reuses one buffer: the binding is synchronous and this runs per connection. */
export function peerCred(fd: number): PeerCred {
  ucredLen[0] = 12;
  check("getsockopt", c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucred, ucredLen), "SO_PEERCRED");
  return { pid: ucred.readInt32LE(0), uid: ucred.readUInt32LE(4), gid: ucred.readUInt32LE(8) };
}

export function ioctl(fd: number, request: number, arg: Buffer): void {
  check("ioctl", c.ioctlPtr(fd, request, arg));
}

/** The address of a buffer's memory, for structures that point at other buffers (ifreq.ifr_data). */
export function addressOf(buf: Buffer): bigint {
  return koffi.address(buf);
}

/** ioctl(2) returning -errno instead of throwing, for requests whose failure is an answer. */
export function ioctlErrno(fd: number, request: number, arg: Buffer | number): number {
  const r = typeof arg === "number" ? c.ioctlInt(fd, request, arg) : c.ioctlPtr(fd, request, arg);
  return r < 0 ? -koffi.errno() : r;
}

export function ioctlInt(fd: number, request: number, arg: number): void {
  check("ioctl", c.ioctlInt(fd, request, arg));
}

export function gettid(): number {
  return c.gettid();
}

/** The errno of the last failed call on this thread (for callers of the *Raw functions). */
export function errno(): number {
  return koffi.errno();
}

const SYS_getdents64 = process.arch === "arm64" ? 61 : 217;

/** getdents64(2) into `buf` without exceptions: bytes of struct linux_dirent64 records, 0 at the end, or -errno. */
export function getdents64Raw(fd: number, buf: Buffer): number {
  const n = Number(c.syscallPtr(SYS_getdents64, fd, buf, buf.length));
  return n < 0 ? -koffi.errno() : n;
}

const SYS_bpf = process.arch === "arm64" ? 280 : 321;

/** bpf(2): `cmd` with its `union bpf_attr` (pointers in it from addressOf); returns the result (an fd for loads). */
export function bpf(cmd: number, attr: Buffer, what = "bpf"): number {
  return check(what, c.syscallPtr(SYS_bpf, cmd, attr, attr.length));
}

// The new mount API (Linux 5.2; one number on every architecture).
const SYS_fsopen = 430;
const SYS_fsconfig = 431;
const SYS_fsmount = 432;
const FSCONFIG_CMD_CREATE = 6;
const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;

/**
 * A new instance of filesystem `fstype` as a detached mount (fsopen, fsconfig create,
 * fsmount): an fd of its root, attached to no mount point, gone when the last fd on it
 * closes. Never visible in any mount table, so nothing is left behind by a crash.
 */
export function detachedMount(fstype: string): number {
  const fsfd = check("fsopen", c.syscallStr(SYS_fsopen, fstype, FSOPEN_CLOEXEC), fstype);
  try {
    check("fsconfig", c.syscall5(SYS_fsconfig, fsfd, FSCONFIG_CMD_CREATE, 0, 0, 0), fstype);
    return check("fsmount", c.syscall5(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, 0, 0, 0), fstype);
  } finally {
    close(fsfd);
  }
}

const SYS_pidfd_open = 434;
const SYS_pidfd_getfd = 438;

/** pidfd_open(2): a descriptor that becomes readable when the process exits. */
export function pidfdOpen(pid: number): number {
  return check("pidfd_open", c.syscall3(SYS_pidfd_open, pid, 0, 0), String(pid));
}

/** pidfd_open(2) without exceptions: the fd, or -errno. */
export function pidfdOpenRaw(pid: number): number {
  const fd = Number(c.syscall3(SYS_pidfd_open, pid, 0, 0));
  return fd < 0 ? -koffi.errno() : fd;
}

/** pidfd_getfd(2) without exceptions: a copy of descriptor `fd` of the process behind `pidfd`, or -errno. */
export function pidfdGetfdRaw(pidfd: number, fd: number): number {
  const copy = Number(c.syscall3(SYS_pidfd_getfd, pidfd, fd, 0));
  return copy < 0 ? -koffi.errno() : copy;
}

/** ioctl(2) with an integer argument, without exceptions: the result, or -errno. */
export function ioctlIntRaw(fd: number, request: number, arg: number): number {
  const r = Number(c.ioctlInt(fd, request, arg));
  return r < 0 ? -koffi.errno() : r;
}

/** getsockopt(2) of an int option; undefined when it fails. */
export function getsockoptInt(fd: number, level: number, name: number): number | undefined {
  const val = Buffer.alloc(4);
  const len = [4];
  return c.getsockopt(fd, level, name, val, len) === 0 ? val.readInt32LE(0) : undefined;
}

const SO_NETNS_COOKIE = 71;

/** The socket's network namespace cookie (SO_NETNS_COOKIE): unique per namespace for the life of the host. */
export function netnsCookie(fd: number): bigint {
  const val = Buffer.alloc(8);
  const len = [8];
  check("getsockopt", c.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, val, len), "SO_NETNS_COOKIE");
  return val.readBigUInt64LE(0);
}

export const F_DUPFD_CLOEXEC = 1030;

/** fcntl(2) with an int argument, without exceptions: the result, or -errno. */
export function fcntlRaw(fd: number, cmd: number, arg: number): number {
  const r = Number(c.fcntl(fd, cmd, arg));
  return r < 0 ? -koffi.errno() : r;
}

/** write(2) without exceptions: bytes written, or -errno. */
export function writeRaw(fd: number, buf: Buffer): number {
  const n = Number(c.write(fd, buf, buf.length));
  return n < 0 ? -koffi.errno() : n;
}

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

/** eventfd(2); always close-on-exec. */
export function eventfd(initval: number, flags: number): number {
  return check("eventfd", c.eventfd(initval, flags | EFD_CLOEXEC));
}

export const POLLIN = 1;

export interface PollFd {
  fd: number;
  events: number;
  /** Filled in by pollAsync. */
  revents: number;
}

/**
 * poll(2) on the libuv thread pool (koffi's async call): the event loop goes on while it
 * waits. `fds[].revents` are set when `done` runs; `err` is set when the call failed.
 */
export function pollAsync(fds: PollFd[], timeoutMs: number, done: (err: unknown) => void): void {
  c.poll.async(fds, fds.length, timeoutMs, done);
}

/**
 * vsnprintf(3) into `buf` from a C format and va_list (a libbpf print callback's
 * arguments); returns the length it wanted to write.
 */
export function vsnprintf(buf: Buffer, fmt: string, ap: unknown): number {
  return Number(c.vsnprintf(buf, buf.length, fmt, ap));
}

// ───────────────────────────── inotify ─────────────────────────────

export const IN_MODIFY = 0x2;
export const IN_CLOSE_WRITE = 0x8;
export const IN_OPEN = 0x20;
export const IN_IGNORED = 0x8000;
export const IN_Q_OVERFLOW = 0x4000;
export const IN_NONBLOCK = 0o4000;
export const IN_CLOEXEC = 0o2000000;

/** inotify_init1(2), non-blocking and close-on-exec. */
export function inotifyInit(): number {
  return check("inotify_init1", c.inotifyInit1(IN_NONBLOCK | IN_CLOEXEC));
}

/** inotify_add_watch(2) without exceptions: the watch descriptor, or -errno. */
export function inotifyAddWatchRaw(fd: number, path: string, mask: number): number {
  const wd = c.inotifyAddWatch(fd, path, mask);
  return wd < 0 ? -koffi.errno() : wd;
}

export function inotifyRmWatch(fd: number, wd: number): void {
  c.inotifyRmWatch(fd, wd);
}

// ───────────────────────────── io_uring (file table only) ─────────────────────────────

const SYS_io_uring_setup = 425;
const SYS_io_uring_register = 427;
const IORING_REGISTER_FILES_UPDATE = 6;
const IORING_REGISTER_FILES2 = 13;
const IORING_RSRC_REGISTER_SPARSE = 1;

/** io_uring_setup(2) of a ring with one entry: used only for its registered-file table. */
export function ioUringSetup(): number {
  const params = Buffer.alloc(120); // struct io_uring_params, zeroed: defaults
  return check("io_uring_setup", c.syscallPtr(SYS_io_uring_setup, 1, params, 0));
}

/** A sparse registered-file table of `size` empty entries (IORING_REGISTER_FILES2). */
export function ioUringRegisterSparseFiles(ring: number, size: number): void {
  const reg = Buffer.alloc(32); // struct io_uring_rsrc_register
  reg.writeUInt32LE(size, 0);
  reg.writeUInt32LE(IORING_RSRC_REGISTER_SPARSE, 4);
  check("io_uring_register(FILES2)", c.syscall4(SYS_io_uring_register, ring, IORING_REGISTER_FILES2, reg, reg.length));
}

/** Puts descriptors (-1: empty the entry) into a registered-file table from entry `offset` on. */
export function ioUringUpdateFiles(ring: number, offset: number, fds: readonly number[]): void {
  const list = Buffer.alloc(4 * fds.length);
  fds.forEach((fd, i) => list.writeInt32LE(fd, 4 * i));
  const update = Buffer.alloc(16); // struct io_uring_files_update
  update.writeUInt32LE(offset, 0);
  update.writeBigUInt64LE(koffi.address(list), 8);
  check("io_uring_register(FILES_UPDATE)", c.syscall4(SYS_io_uring_register, ring, IORING_REGISTER_FILES_UPDATE, update, fds.length));
}

const PRIO_PROCESS = 0;

/** setpriority(2) of one thread (Linux: a tid is a PRIO_PROCESS target and nice is per thread). */
export function setThreadNice(tid: number, nice: number): void {
  check("setpriority", c.setpriority(PRIO_PROCESS, tid, nice));
}

const CLOCK_THREAD_CPUTIME_ID = 3;
const timespec = Buffer.alloc(16);

/**
 * CPU time of the calling thread (user + system), in ms: process.cpuUsage() counts every
 * thread, so it cannot tell the scrub worker's share from the API's (Node 20 has no
 * process.threadCpuUsage()). For step timings only.
 */
export function threadCpuMs(): number {
  check("clock_gettime", c.clockGettime(CLOCK_THREAD_CPUTIME_ID, timespec));
  return Number(timespec.readBigInt64LE(0)) * 1000 + Number(timespec.readBigInt64LE(8)) / 1e6;
}
