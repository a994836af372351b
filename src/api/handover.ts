// The API side of a live handover (`netslot upgrade`). The old daemon and the new one
// share one listening socket; the old one must stop changing the pool before the new one
// loads it, without refusing, resetting or failing a single request. The gate does that:
//
//   open      requests are answered here;
//   paused    new requests wait (held, not failed) while those already running finish;
//   resumed   the new daemon failed: held and new requests are answered here again;
//   forwarded the new daemon serves: held and new requests on this daemon's remaining
//             keep-alive connections are relayed to it over the socket path (which only
//             the new daemon accepts on by then), answered with Connection: close so that
//             the client's next request opens a connection to the new daemon. This
//             daemon never closes an idle connection itself then: a client may be reusing
//             it that very instant; it waits until the clients have closed them.
import * as http from "node:http";
import type { PeerCred } from "../kernel/libc.js";

/**
 * The relayed client's SO_PEERCRED ("pid uid gid"), so that the new daemon identifies the
 * consumer and binds owner "caller" as if the client had connected to it.
 */
export const RELAYED_PEER_HEADER = "netslot-relayed-peer";

export function parseRelayedPeer(value: string | string[]): PeerCred | undefined {
  const m = typeof value === "string" ? /^(\d+) (\d+) (\d+)$/.exec(value) : null;
  return m ? { pid: Number(m[1]), uid: Number(m[2]), gid: Number(m[3]) } : undefined;
}

/** Bodies relayed to the new daemon are read whole first (the API's own limit is 64 KiB). */
const RELAY_BODY_LIMIT = 1024 * 1024;

type Listener = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Hop-by-hop headers a relay must not copy (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"]);

function isUpgradeCall(req: http.IncomingMessage): boolean {
  return req.method === "POST" && /^\/v1\/upgrade(?:[?#]|$)/.test(req.url ?? "");
}

export class RequestGate {
  private state: "open" | "paused" | "forwarded" = "open";
  private target: string | undefined;
  private held: Array<() => void> = [];
  /** Requests being answered here, with their responses. */
  private readonly running = new Map<http.IncomingMessage, http.ServerResponse>();
  private idle: Array<() => void> = [];

  /** `peerOf`: the client's credentials, passed on with a relayed request. */
  constructor(private readonly peerOf: (req: http.IncomingMessage) => PeerCred | undefined = () => undefined) {}

  /** The request listener, gated. */
  wrap(listener: Listener): Listener {
    return (req, res) => {
      if (this.state === "open") this.run(listener, req, res);
      else if (this.state === "forwarded") this.relay(req, res);
      else this.held.push(() => (this.state === "forwarded" ? this.relay(req, res) : this.run(listener, req, res)));
    };
  }

  /**
   * Holds new requests; resolves once every request already running has been answered,
   * except upgrade calls (the one asking for the pause waits for it).
   */
  pause(): Promise<void> {
    this.state = "paused";
    const others = () => [...this.running.keys()].filter((req) => !isUpgradeCall(req)).length;
    if (others() <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (others() <= 0) resolve();
        else this.idle.push(check);
      };
      this.idle.push(check);
    });
  }

  /** Answers held and new requests here again (the handover failed). */
  resume(): void {
    this.state = "open";
    this.release();
  }

  /** Relays held and new requests to the daemon listening on `socketPath`. */
  forward(socketPath: string): void {
    this.state = "forwarded";
    this.target = socketPath;
    // Requests still answered here (the upgrade call itself) end their connection too, so
    // that the client's next request goes to the new daemon.
    for (const res of this.running.values()) if (!res.headersSent) res.shouldKeepAlive = false;
    this.release();
  }

  private release(): void {
    const held = this.held;
    this.held = [];
    for (const go of held) go();
  }

  private run(listener: Listener, req: http.IncomingMessage, res: http.ServerResponse): void {
    this.running.set(req, res);
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      this.running.delete(req);
      const waiting = this.idle;
      this.idle = [];
      for (const w of waiting) w();
    };
    res.once("finish", finished);
    res.once("close", finished);
    listener(req, res);
  }

  private relay(req: http.IncomingMessage, res: http.ServerResponse): void {
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
    const peer = this.peerOf(req);
    if (peer) headers[RELAYED_PEER_HEADER] = `${peer.pid} ${peer.uid} ${peer.gid}`;
    else delete headers[RELAYED_PEER_HEADER];
    const attempt = (tries: number): void => {
      const upstream = http.request({ socketPath: this.target, method: req.method, path: req.url, headers, agent: false }, (answer) => {
        const out: http.OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(name) && value !== undefined) out[name] = value;
        out.connection = "close";
        res.writeHead(answer.statusCode ?? 502, out);
        answer.pipe(res);
      });
      upstream.on("error", (err: NodeJS.ErrnoException) => {
        // Only a connection that was never made can be tried again: the request was not sent.
        if (!upstream.reusedSocket && tries > 0 && (err.code === "ECONNREFUSED" || err.code === "ENOENT" || err.code === "EAGAIN")) {
          setTimeout(() => attempt(tries - 1), 50);
          return;
        }
        res.destroy(err);
      });
      body.then((b) => upstream.end(b), () => upstream.destroy());
    };
    // The body is read once, so that a retried connection can send it again.
    const body = new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        // Far over any body the API accepts: the new daemon would refuse it anyway.
        if (size > RELAY_BODY_LIMIT) req.destroy(new Error("request body too large to relay"));
        else chunks.push(c);
      });
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });
    attempt(20);
  }
}
