// nftables through libnftables (koffi FFI): the same parser and netlink code as the `nft`
// command, without spawning a process. libnftables opens its netlink socket in
// nft_ctx_new, so a context acts on the network namespace the thread was in when the
// context was CREATED. nftRun/nftJson therefore create and free a context per call (about
// 0.1 ms inside a namespace): wrap them in withNetns(...) to target a slot namespace.
//
// Closing an nftables netlink socket blocks for an RCU grace period (~13 ms measured here)
// whenever any namespace has committed a deletion whose memory is not reclaimed yet: the
// kernel's NETLINK_URELEASE handler flushes nf_tables' destroy work, holding the socket's
// namespace commit mutex meanwhile. So the context is freed on the calling thread while a
// dup of its socket keeps the socket open, and the last close happens on libuv's thread
// pool, off the event loop. A transaction in the same namespace right after still waits
// for that mutex: use one NftContext (withNft) for several commands on one namespace.
import * as fs from "node:fs";
import koffi from "koffi";
import * as libc from "./libc.js";

const lib = koffi.load("libnftables.so.1");
const mnl = koffi.load("libmnl.so.0");

const NETLINK_NETFILTER = 12;
const SO_PROTOCOL = 38;
const SO_DOMAIN = 39;

const NFT_CTX_DEFAULT = 0;
const NFT_CTX_OUTPUT_JSON = 1 << 4;

const ctxType = koffi.pointer(koffi.opaque("nft_ctx"));

const n = {
  ctxNew: lib.func("nft_ctx_new", ctxType, ["uint32_t"]),
  ctxFree: lib.func("nft_ctx_free", "void", [ctxType]),
  setOutputFlags: lib.func("nft_ctx_output_set_flags", "void", [ctxType, "unsigned int"]),
  bufferOutput: lib.func("nft_ctx_buffer_output", "int", [ctxType]),
  bufferError: lib.func("nft_ctx_buffer_error", "int", [ctxType]),
  getOutput: lib.func("nft_ctx_get_output_buffer", "const char *", [ctxType]),
  getError: lib.func("nft_ctx_get_error_buffer", "const char *", [ctxType]),
  runBuffer: lib.func("nft_run_cmd_from_buffer", "int", [ctxType, "const char *"]),
  mnlSocketFd: mnl.func("mnl_socket_get_fd", "int", ["void *"]),
};

function sockoptInt(fd: number, name: number): number | undefined {
  return libc.getsockoptInt(fd, libc.SOL_SOCKET, name);
}

/**
 * The context's netfilter netlink socket: `struct nft_ctx` starts with its `struct
 * mnl_socket *nf_sock` (nftables 0.9-1.x). Checked to be an AF_NETLINK/NETLINK_NETFILTER
 * socket (libnftables 1.0.6 verified); undefined, meaning a plain synchronous free, if not.
 */
function contextSocketFd(ctx: unknown): number | undefined {
  const sock: unknown = koffi.decode(ctx, "void *");
  if (sock === null) return undefined;
  const fd = Number(n.mnlSocketFd(sock));
  if (fd < 0) return undefined;
  if (sockoptInt(fd, SO_DOMAIN) !== libc.AF_NETLINK || sockoptInt(fd, SO_PROTOCOL) !== NETLINK_NETFILTER) return undefined;
  return fd;
}

let pendingCloses = 0;

function freeContext(ctx: unknown, fd: number | undefined): void {
  const dup = fd === undefined ? -1 : libc.fcntlRaw(fd, libc.F_DUPFD_CLOEXEC, 0);
  n.ctxFree(ctx);
  if (dup < 0) return;
  pendingCloses++;
  fs.close(dup, () => {
    pendingCloses--;
  });
}

/** Deferred socket closes still running on the thread pool (see the header comment). */
export function nftPendingCloses(): number {
  return pendingCloses;
}

/** A failed libnftables command; `nftMessage` is libnftables' own error text (what `nft` prints). */
export class NftError extends Error {
  readonly nftMessage: string;
  readonly commands: string;
  constructor(nftMessage: string, commands: string) {
    const first = nftMessage.split("\n").find((line) => line.trim() !== "") ?? "unknown error";
    super(`nft: ${first.trim()}`);
    this.name = "NftError";
    this.nftMessage = nftMessage;
    this.commands = commands;
  }
}

/**
 * One libnftables context, bound to the namespace the thread is in when it is constructed.
 * Use one context for several commands against the same namespace (e.g. list, then reset):
 * each freed context's socket close can hold that namespace's nf_tables commit mutex for a
 * grace period (see above), which the next context's transaction there would wait for.
 */
export class NftContext {
  #ctx: unknown;
  readonly #fd: number | undefined;

  constructor() {
    const ctx: unknown = n.ctxNew(NFT_CTX_DEFAULT);
    if (ctx === null) throw new NftError("nft_ctx_new failed (netlink socket?)", "");
    this.#ctx = ctx;
    this.#fd = contextSocketFd(ctx);
    // Buffered output and errors: nothing is written to the daemon's stdout/stderr.
    n.bufferOutput(ctx);
    n.bufferError(ctx);
  }

  #exec(commands: string, json: boolean): string {
    const ctx = this.#ctx;
    if (ctx === null) throw new Error("NftContext used after free()");
    n.setOutputFlags(ctx, json ? NFT_CTX_OUTPUT_JSON : 0);
    const rc = n.runBuffer(ctx, commands);
    // Reading a buffer rewinds it: read both every time so no text leaks into the next run.
    const out = String(n.getOutput(ctx) ?? "");
    const err = String(n.getError(ctx) ?? "");
    if (rc !== 0) throw new NftError(err, commands);
    return out;
  }

  /** `nft -f -`: runs `commands` (`nft -f` syntax) as ONE transaction; returns the output. */
  run(commands: string): string {
    return this.#exec(commands, false);
  }

  /** `nft -j <command>`: returns the parsed JSON document (`{ nftables: [...] }`). */
  json(command: string): unknown {
    const out = this.#exec(command, true);
    return out.trim() === "" ? { nftables: [] } : (JSON.parse(out) as unknown);
  }

  /** Frees the context; its socket's last close runs off the event loop. */
  free(): void {
    if (this.#ctx !== null) {
      const ctx = this.#ctx;
      this.#ctx = null;
      freeContext(ctx, this.#fd);
    }
  }
}

/** Runs `fn` with a context created in the current thread's namespace, then frees it. */
export function withNft<T>(fn: (nft: NftContext) => T): T {
  const ctx = new NftContext();
  try {
    return fn(ctx);
  } finally {
    ctx.free();
  }
}

/**
 * `nft -f - <<< "$commands"` in the current thread's namespace: all commands are one
 * netlink transaction, so either all apply or none does. Throws NftError on failure.
 */
export function nftRun(commands: string): void {
  withNft((nft) => runRetryingEintr(nft, commands));
}

/**
 * A signal arriving during the commit makes the kernel abort the whole transaction with
 * EINTR (nothing applied), and libnftables does not retry: do it here, a bounded number
 * of times. Quirks live in this layer only.
 */
export function runRetryingEintr(nft: NftContext, commands: string): string {
  for (let attempt = 0; ; attempt++) {
    try {
      return nft.run(commands);
    } catch (err) {
      if (attempt >= 4 || !(err instanceof NftError) || !err.nftMessage.includes("Interrupted system call")) throw err;
    }
  }
}

/**
 * `nft -j <command>` (e.g. "list ruleset", "list table inet x") in the current thread's
 * namespace; returns the parsed JSON document (`{ nftables: [...] }`).
 */
export function nftJson(command: string): unknown {
  return withNft((nft) => nft.json(command));
}
