// The API's unix socket: mode 0660 (its group decides who may connect), a stale socket
// of a dead daemon replaced, anything else refused; on close, removed only if still ours.
import * as fs from "node:fs";
import type * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";

export class UnixSocketListener {
  private boundPath: string | null = null;
  private boundIno: number | null = null;

  constructor(private readonly server: http.Server) {}

  async listen(socketPath: string, opts: { group?: number } = {}): Promise<void> {
    const server = this.server;
    await prepareSocketPath(socketPath);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once("error", onError);
      server.listen(socketPath, () => {
        server.off("error", onError);
        resolve();
      });
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
    if (server.listening) {
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), 5_000);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
    }
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
