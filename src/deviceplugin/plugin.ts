// The Kubernetes device plugin: advertises the pool as `netslot.dev/slot` devices to the
// kubelet, leases a slot per allocated device, and releases it once no pod holds the device.
//
// Devices are opaque ids netslot-0..N-1 (N = pool size), not slot indexes: the daemon picks
// the slot at Allocate. Health follows the pool's counts: free, leased and scrubbing slots
// are healthy, quarantined and missing ones are not (nor any unallocated one while the daemon
// drains); devices with a lease stay healthy and
// the unhealthy marks go to the highest unallocated ids. The lease of a device carries the
// label netslot.dev/device-id, which makes Allocate idempotent and lets a restarted plugin
// find its leases again. Leases are not bound to the plugin's process: a plugin restart must
// not take slots away from running pods.
import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { NetslotApiError, NetslotClient, type Lease, type PoolCounts } from "../sdk/index.js";
import {
  DEVICE_PLUGIN_VERSION,
  HEALTHY,
  UNHEALTHY,
  kubeletApis,
  unary,
  type AllocateRequest,
  type AllocateResponse,
  type ContainerAllocateResponse,
  type Device,
  type ListAndWatchResponse,
  type ListPodResourcesResponse,
  type RegisterRequest,
} from "./protos.js";

export const RESOURCE_NAME = "netslot.dev/slot";
export const DEVICE_LABEL = "netslot.dev/device-id";
export const PLUGIN_SOCKET = "netslot.sock";

export interface DevicePluginOptions {
  /** The kubelet's root (default /var/lib/kubelet). */
  kubeletDir: string;
  /** netslot's API socket. */
  socket: string;
  token?: string;
  /** Seconds between PodResources polls (default 10). */
  reconcileSeconds: number;
  /** Milliseconds between pool polls for ListAndWatch (default 250: updates within 1 s). */
  watchIntervalMs?: number;
  log?: (msg: string) => void;
}

function deviceId(i: number): string {
  return `netslot-${i}`;
}

/** The device list for a pool: one per slot, allocated devices healthy first. */
export function devicesFor(pool: PoolCounts, allocated: ReadonlySet<string>): Device[] {
  // A draining daemon grants no new lease: only allocated devices stay healthy.
  let healthyLeft = pool.draining ? 0 : Math.max(0, pool.size - pool.quarantined - pool.missing - allocated.size);
  const devices: Device[] = [];
  for (let i = 0; i < pool.size; i++) {
    const id = deviceId(i);
    let healthy = allocated.has(id);
    if (!healthy && healthyLeft > 0) {
      healthy = true;
      healthyLeft--;
    }
    devices.push({ ID: id, health: healthy ? HEALTHY : UNHEALTHY });
  }
  return devices;
}

/** What a container gets for the lease of one device: envs and the netns mounted read-only. */
export function containerEnvs(lease: Lease, suffix = ""): Record<string, string> {
  return {
    [`NETSLOT_LEASE_ID${suffix}`]: lease.id,
    [`NETSLOT_NETNS${suffix}`]: lease.slot.netns,
    [`NETSLOT_TAP${suffix}`]: lease.slot.tap,
    [`NETSLOT_GUEST_IP${suffix}`]: lease.guest.ip,
    [`NETSLOT_GUEST_MAC${suffix}`]: lease.guest.mac,
    [`NETSLOT_GUEST_GATEWAY${suffix}`]: lease.guest.gateway,
    [`NETSLOT_KERNEL_IP_ARG${suffix}`]: lease.guest.kernelIpArg,
  };
}

export class DevicePlugin {
  private readonly client: NetslotClient;
  private readonly pluginDir: string;
  private readonly kubeletSocket: string;
  private readonly podResourcesSocket: string;
  private server: grpc.Server | undefined;
  private readonly watchers = new Set<grpc.ServerWritableStream<unknown, ListAndWatchResponse>>();
  private devices: Device[] = [];
  private lastSent = "";
  /** device id -> lease id, for leases this plugin made (from the daemon's labels). */
  private leases = new Map<string, string>();
  /** Device ids absent from the previous PodResources answer (released when absent twice). */
  private absentOnce = new Set<string>();
  private kubeletIdentity = "";
  private registered = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private allocating: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: DevicePluginOptions) {
    this.client = new NetslotClient({ socketPath: options.socket, ...(options.token ? { token: options.token } : {}) });
    this.pluginDir = path.join(options.kubeletDir, "device-plugins");
    this.kubeletSocket = path.join(this.pluginDir, "kubelet.sock");
    this.podResourcesSocket = path.join(options.kubeletDir, "pod-resources", "kubelet.sock");
  }

  private log(msg: string): void {
    this.options.log?.(msg);
  }

  /** Reads the pool and the plugin's leases, serves, registers, and keeps all three current. */
  async start(): Promise<void> {
    // The daemon may still be starting (same pod): wait for it rather than exit.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.refreshLeases();
        await this.refreshDevices();
        break;
      } catch (err) {
        if (this.closed) return;
        if (attempt === 0) this.log(`waiting for the daemon: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await this.serve();
    await this.ensureRegistered();
    const every = (ms: number, fn: () => Promise<void>) => {
      let running = false;
      const t = setInterval(() => {
        if (running || this.closed) return;
        running = true;
        fn()
          .catch((err: unknown) => this.log((err as Error).message))
          .finally(() => (running = false));
      }, ms);
      this.timers.push(t);
    };
    every(this.options.watchIntervalMs ?? 250, () => this.refreshDevices());
    // The kubelet re-creates kubelet.sock when it restarts (and removes plugin sockets).
    every(500, () => this.ensureRegistered());
    every(this.options.reconcileSeconds * 1000, () => this.serialized(() => this.reconcile()));
  }

  stop(): void {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.closeServer();
    this.client.close();
  }

  // Allocations and reconciles one at a time: two requests for one device id must not lease
  // twice, and a reconcile must not judge a lease an allocation is still answering about.
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.allocating.then(fn);
    this.allocating = run.catch(() => undefined);
    return run;
  }

  private closeServer(): void {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    // Open ListAndWatch streams would hold a graceful shutdown forever: end them first.
    for (const w of this.watchers) w.end();
    this.watchers.clear();
    server.forceShutdown();
  }

  private async serve(): Promise<void> {
    this.closeServer();
    const socketPath = path.join(this.pluginDir, PLUGIN_SOCKET);
    fs.rmSync(socketPath, { force: true });
    const server = new grpc.Server();
    server.addService(kubeletApis().DevicePlugin.service, {
      GetDevicePluginOptions: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { pre_start_required: false, get_preferred_allocation_available: false }),
      ListAndWatch: (call: grpc.ServerWritableStream<unknown, ListAndWatchResponse>) => {
        this.watchers.add(call);
        call.on("cancelled", () => this.watchers.delete(call));
        call.on("close", () => this.watchers.delete(call));
        call.write({ devices: this.devices });
      },
      Allocate: (call: grpc.ServerUnaryCall<AllocateRequest, AllocateResponse>, cb: grpc.sendUnaryData<AllocateResponse>) => {
        this.serialized(() => this.allocate(call.request)).then(
          (res) => cb(null, res),
          (err: unknown) => {
            const exhausted = err instanceof NetslotApiError && err.code === "pool_exhausted";
            cb({ code: exhausted ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.UNAVAILABLE, details: (err as Error).message });
          },
        );
      },
      GetPreferredAllocation: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { container_responses: [] }),
      PreStartContainer: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.server = server;
  }

  /** Registers with the kubelet whenever its socket is new (first start, kubelet restart). */
  private async ensureRegistered(): Promise<void> {
    let identity: string;
    try {
      const st = fs.statSync(this.kubeletSocket);
      identity = `${st.ino}:${st.ctimeMs}`;
    } catch {
      if (this.registered) this.log(`${this.kubeletSocket} is gone; waiting for the kubelet`);
      this.registered = false;
      this.kubeletIdentity = "";
      return;
    }
    const ours = path.join(this.pluginDir, PLUGIN_SOCKET);
    if (this.registered && identity === this.kubeletIdentity && fs.existsSync(ours)) return;
    // A restarted kubelet removes plugin sockets: serve again before registering.
    if (!fs.existsSync(ours)) await this.serve();
    const registration = new (kubeletApis().Registration)(`unix://${this.kubeletSocket}`, grpc.credentials.createInsecure());
    try {
      const request: RegisterRequest = {
        version: DEVICE_PLUGIN_VERSION,
        endpoint: PLUGIN_SOCKET,
        resource_name: RESOURCE_NAME,
        options: { pre_start_required: false, get_preferred_allocation_available: false },
      };
      await unary(registration, "Register", request);
      this.registered = true;
      this.kubeletIdentity = identity;
      this.log(`registered ${RESOURCE_NAME} with the kubelet (${this.devices.length} devices)`);
    } catch (err) {
      this.registered = false;
      this.log(`registration failed (retrying): ${(err as Error).message}`);
    } finally {
      registration.close();
    }
  }

  private async refreshLeases(): Promise<void> {
    const leases = await this.client.list();
    this.leases = new Map(leases.filter((l) => l.labels[DEVICE_LABEL] !== undefined).map((l) => [l.labels[DEVICE_LABEL]!, l.id]));
  }

  private async refreshDevices(): Promise<void> {
    const pool = await this.client.pool();
    this.devices = devicesFor(pool, new Set(this.leases.keys()));
    const text = JSON.stringify(this.devices);
    if (text === this.lastSent) return;
    this.lastSent = text;
    for (const w of this.watchers) w.write({ devices: this.devices });
  }

  private async leaseFor(id: string): Promise<Lease> {
    const known = this.leases.get(id);
    if (known) {
      try {
        return await this.client.get(known);
      } catch (err) {
        if (!(err instanceof NetslotApiError && err.code === "lease_not_found")) throw err;
        this.leases.delete(id);
      }
    }
    const lease = await this.client.acquire({ labels: { [DEVICE_LABEL]: id }, bindToProcess: false });
    this.leases.set(id, lease.id);
    this.absentOnce.delete(id);
    this.log(`device ${id}: lease ${lease.id} on ${lease.slot.netns}`);
    return lease;
  }

  private async allocate(request: AllocateRequest): Promise<AllocateResponse> {
    const responses: ContainerAllocateResponse[] = [];
    for (const container of request.container_requests) {
      const envs: Record<string, string> = {};
      const mounts: ContainerAllocateResponse["mounts"] = [];
      for (const [n, id] of container.devices_ids.entries()) {
        if (!/^netslot-\d+$/.test(id)) throw new Error(`unknown device id ${id}`);
        const lease = await this.leaseFor(id);
        // The first device's variables are unsuffixed; more devices in one container get _1, _2, ...
        Object.assign(envs, containerEnvs(lease, n === 0 ? "" : `_${n}`));
        mounts.push({ container_path: lease.slot.netns, host_path: lease.slot.netns, read_only: true });
      }
      responses.push({ envs, mounts });
    }
    await this.refreshDevices();
    return { container_responses: responses };
  }

  /** Releases the leases of devices PodResources has not listed in two polls in a row. */
  private async reconcile(): Promise<void> {
    await this.refreshLeases();
    const lister = new (kubeletApis().PodResourcesLister)(`unix://${this.podResourcesSocket}`, grpc.credentials.createInsecure());
    let answer: ListPodResourcesResponse;
    try {
      answer = await unary<ListPodResourcesResponse>(lister, "List", {});
    } catch (err) {
      // Without an answer nothing is known to be unused: release nothing.
      this.log(`PodResources List failed: ${(err as Error).message}`);
      return;
    } finally {
      lister.close();
    }
    const assigned = new Set<string>();
    for (const pod of answer.pod_resources) {
      for (const c of pod.containers) for (const d of c.devices) if (d.resource_name === RESOURCE_NAME) for (const id of d.device_ids) assigned.add(id);
    }
    const absent = new Set<string>();
    for (const [id, leaseId] of this.leases) {
      if (assigned.has(id)) continue;
      // Twice: a device allocated just before a poll may not be listed by it yet.
      if (!this.absentOnce.has(id)) {
        absent.add(id);
        continue;
      }
      try {
        await this.client.release(leaseId);
        this.log(`device ${id}: no pod holds it; released lease ${leaseId}`);
      } catch (err) {
        if (!(err instanceof NetslotApiError && err.code === "lease_not_found")) throw err;
      }
      this.leases.delete(id);
    }
    this.absentOnce = absent;
    await this.refreshDevices();
  }
}
