// `netslot metrics-exporter --listen HOST:PORT [--socket API_SOCK] [--token T]`: serves the
// daemon's GET /metrics over TCP for Prometheus, and nothing else. The API itself stays on
// its unix socket (it leases slots; TCP would hand that to anyone who can reach the port).
// When the daemon does not answer, the scrape fails with 503, so Prometheus' `up` goes to 0
// and NetslotDaemonDown fires (deploy/prometheus).
import * as http from "node:http";
import { ConfigError, DEFAULTS } from "../daemon/config.js";
import { NetslotClient } from "../sdk/index.js";
import { parseFlags } from "./args.js";

const USAGE = "usage: netslot metrics-exporter --listen HOST:PORT [--socket API_SOCK] [--token T]";
const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`--listen takes HOST:PORT (e.g. 0.0.0.0:9464), not ${value}`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** Starts the exporter; resolves once it listens. */
export async function startMetricsExporter(opts: { listen: string; socket: string; token?: string }): Promise<http.Server> {
  const { host, port } = parseListen(opts.listen);
  const client = new NetslotClient({ socketPath: opts.socket, timeoutMs: 10_000, ...(opts.token ? { token: opts.token } : {}) });
  const server = http.createServer((req, res) => {
    const url = (req.url ?? "").split("?")[0];
    if (url !== "/metrics") {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("only /metrics is served here\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain" }).end("GET only\n");
      return;
    }
    client.metrics().then(
      (text) => res.writeHead(200, { "Content-Type": CONTENT_TYPE }).end(req.method === "HEAD" ? undefined : text),
      (err: unknown) => res.writeHead(503, { "Content-Type": "text/plain" }).end(`netslot daemon not answering: ${(err as Error).message}\n`),
    );
  });
  server.on("close", () => client.close());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      listen: { type: "string" },
      socket: { type: "string", default: process.env.NETSLOT_SOCKET ?? DEFAULTS.socket },
      token: { type: "string", default: process.env.NETSLOT_TOKEN },
    },
    USAGE,
  );
  if (!values.listen) throw new ConfigError(`--listen is required\n${USAGE}`);
  const server = await startMetricsExporter({ listen: values.listen, socket: values.socket, ...(values.token ? { token: values.token } : {}) });
  process.stderr.write(`netslot metrics-exporter: serving ${values.socket}'s /metrics on ${values.listen}\n`);
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // Prometheus keeps its connection alive
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  return -1; // keeps running
}
