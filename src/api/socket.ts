// The API's unix socket: mode 0660 (its group decides who may connect), a stale socket
// of a dead daemon replaced, anything else refused; on close, removed only if still ours.
// In a handover the old daemon stops accepting on it without removing it, and the new
// daemon serves the connections of the same socket, received from the old one.
import * as fs from "node:fs";
import type * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";

export interface ListenOptions {
  /** The socket file's group (--socket-group), so its members may connect. */
  group?: number;
  /** Makes the listening socket and returns its descriptor (rather than node binding the path). */
  bindFd?: (path: string) => number;
}

export class UnixSocketListener {
  private boundPath: string | null = null;
  private boundIno: number | null = null;
  private readonly connections = new Set<net.Socket>();
  /** A listening socket received from the old daemon (handover); the server itself then never listens. */
  private adopted: net.Server | null = null;

  constructor(private readonly server: http.Server) {
    server.on("connection", (socket: net.Socket) => {
      this.connections.add(socket);
      socket.once("close", () => this.connections.delete(socket));
    });
  }

  /** The new daemon of a handover: serves the connections of `listening`, bound at `socketPath`. */
  adopt(listening: net.Server, socketPath: string): void {
    this.adopted = listening;
    listening.on("connection", (socket: net.Socket) => this.server.emit("connection", socket));
    this.boundPath = socketPath;
    this.boundIno = fs.statSync(socketPath).ino;
  }

  /**
   * The old daemon of a handover: stops accepting (the socket file stays: it is the new
   * daemon's now); resolves once every connection it still has is closed.
   */
  stopAccepting(): Promise<void> {
    this.boundPath = null;
    const drained = this.drained();
    // net.Server's close, not http.Server's: that one also closes idle keep-alive
    // connections, and a client may be sending on one at that very moment (a reset).
    // Nor does this daemon close an idle one itself any more (see keepIdleConnections):
    // each ends by the client, after its next request (relayed, answered with
    // Connection: close) or when the client drops it; the handover bounds the wait.
    this.keepIdleConnections(true);
    if (this.adopted) {
      this.adopted.close();
      this.adopted = null;
    }
    if (this.server.listening) net.Server.prototype.close.call(this.server);
    return drained;
  }

  /**
   * A handover from its start: no idle keep-alive connection is closed by this daemon.
   * Its keep-alive timer fires in the timers phase, before a request already waiting in the
   * socket is read, so with this daemon's event loop busy (a large pool's handoff) a client
   * reusing a connection just then sees a reset or EPIPE. Off again (`false`) if the
   * handover fails; connections idle meanwhile then stay until their next answer.
   */
  keepIdleConnections(keep: boolean): void {
    if (!keep) {
      if (this.keepAliveTimeout !== undefined) this.server.keepAliveTimeout = this.keepAliveTimeout;
      this.keepAliveTimeout = undefined;
      return;
    }
    this.keepAliveTimeout ??= this.server.keepAliveTimeout;
    this.server.keepAliveTimeout = 0;
    // 0 is the server's own timeout during a request, so this is safe on busy ones too.
    for (const socket of this.connections) socket.setTimeout(0);
  }

  private keepAliveTimeout: number | undefined;

  /** The server that accepts on the socket: the one received in a handover, else the HTTP server itself. */
  listening(): net.Server {
    return this.adopted ?? this.server;
  }

  private drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      const check = (): void => {
        if (this.connections.size === 0) resolve();
      };
      for (const socket of this.connections) socket.once("close", check);
      check();
    });
  }

  async listen(socketPath: string, opts: ListenOptions = {}): Promise<void> {
    const server = this.server;
    await prepareSocketPath(socketPath);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once("error", onError);
      const done = (): void => {
        server.off("error", onError);
        resolve();
      };
      if (opts.bindFd) server.listen({ fd: opts.bindFd(socketPath) }, done);
      else server.listen(socketPath, done);
    });
    // Owner and group only: the socket's group decides who may connect (--socket-group).
    if (opts.group !== undefined) fs.chownSync(socketPath, -1, opts.group);
    fs.chmodSync(socketPath, 0o660);
    this.boundPath = socketPath;
    this.boundIno = fs.statSync(socketPath).ino;
  }

  /** Stops accepting, lets requests in flight finish (at most 5 s), removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    this.adopted?.close();
    this.adopted = null;
    if (server.listening) net.Server.prototype.close.call(server);
    const force = setTimeout(() => server.closeAllConnections(), 5_000);
    force.unref();
    server.closeIdleConnections();
    await this.drained();
    clearTimeout(force);
    if (this.boundPath !== null) {
      // Remove the socket file only if it is still the one we created.
      try {
        if (fs.statSync(this.boundPath).ino === this.boundIno) fs.unlinkSync(this.boundPath);
      } catch {
        // Already gone.
      }
      this.boundPath = null;
    }
  }
}

/** Removes a stale socket left by a dead daemon; refuses to touch anything else. */
async function prepareSocketPath(socketPath: string): Promise<void> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live) throw new Error(`another process is serving on ${socketPath}`);
  try {
    fs.unlinkSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
