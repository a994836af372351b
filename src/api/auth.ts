// Who is calling: the kernel's word on the connecting process (SO_PEERCRED, read once per
// connection) and the bearer token, resolved to a consumer by the tenancy directory.
import { RELAYED_PEER_HEADER, parseRelayedPeer } from "./handover.js";
import type * as http from "node:http";
import type * as net from "node:net";
import { NetslotError } from "../core/errors.js";
import { peerCred, type PeerCred } from "../kernel/libc.js";
import type { Consumer, ConsumerDirectory } from "../tenancy/consumers.js";

/** Peer credentials per connection, read once when it is accepted. */
const peers = new WeakMap<net.Socket, PeerCred>();

/** SO_PEERCRED of an accepted unix connection; undefined when node does not expose the fd. */
function readPeer(socket: net.Socket): PeerCred | undefined {
  // net.Socket has no public accessor for its descriptor; _handle.fd is the libuv pipe's.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return undefined;
  try {
    return peerCred(fd);
  } catch {
    return undefined;
  }
}

/** Records the peer of every connection the server accepts (requests on it reuse it). */
export function trackPeers(server: http.Server): void {
  server.on("connection", (socket: net.Socket) => {
    const cred = readPeer(socket);
    if (cred !== undefined) peers.set(socket, cred);
  });
}

/** The calling process of a request, as the kernel named it at connect(). */
/**
 * A connection on which the old daemon of a handover relays one client's request: the
 * client's credentials, which it sends along, stand for the connection. Believed only from
 * `trustedPid` while it is this process's parent (never from a later process reusing its pid).
 */
export function adoptRelayedPeer(req: http.IncomingMessage, trustedPid: number | undefined): void {
  const claimed = req.headers[RELAYED_PEER_HEADER];
  if (claimed === undefined || trustedPid === undefined) return;
  if (peers.get(req.socket)?.pid !== trustedPid || process.ppid !== trustedPid) return;
  const cred = parseRelayedPeer(claimed);
  if (cred) peers.set(req.socket, cred);
}

export function peerOf(req: http.IncomingMessage): PeerCred | undefined {
  return peers.get(req.socket);
}

/** Sent with unauthorized. */
export const AUTHENTICATE_HEADERS = { "WWW-Authenticate": 'Bearer realm="netslot"' };

/** The consumer a request acts as; null on a public route called by no known consumer. */
export function authorize(directory: ConsumerDirectory, req: http.IncomingMessage, isPublic: boolean): Consumer | null | NetslotError {
  const peer = peerOf(req);
  const authorization = req.headers.authorization;
  const consumer = directory.identify(authorization, peer);
  if (consumer !== null || isPublic) return consumer;
  const detail =
    authorization === undefined
      ? `this daemon has consumers configured and none is matched by uid ${peer?.uid ?? "?"} or gid ${peer?.gid ?? "?"}; send Authorization: Bearer <token>`
      : "the bearer token is not one of a configured consumer";
  return new NetslotError("unauthorized", detail);
}
