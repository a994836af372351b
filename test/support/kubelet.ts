// A kubelet stand-in for device plugin tests, built from the same vendored .proto files as
// the plugin: the Registration service on <dir>/device-plugins/kubelet.sock, PodResources
// List on <dir>/pod-resources/kubelet.sock (answering what the test says pods hold), and a
// client of the plugin's DevicePlugin service. restart() behaves like a kubelet restart:
// its sockets and the plugins' sockets are removed, then kubelet.sock is created anew.
import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { kubeletApis, unary, type AllocateResponse, type Device, type ListAndWatchResponse, type PodResources, type RegisterRequest } from "../../src/deviceplugin/protos.js";

export interface Update {
  at: number;
  devices: Device[];
}

export class KubeletStandIn {
  readonly pluginDir: string;
  readonly registrations: Array<RegisterRequest & { at: number }> = [];
  /** What PodResources List answers. */
  pods: PodResources[] = [];
  podResourcesCalls = 0;
  private registration: grpc.Server | undefined;
  private podResources: grpc.Server | undefined;

  private constructor(readonly dir: string) {
    this.pluginDir = path.join(dir, "device-plugins");
  }

  static async start(dir: string): Promise<KubeletStandIn> {
    const k = new KubeletStandIn(dir);
    fs.mkdirSync(k.pluginDir, { recursive: true });
    fs.mkdirSync(path.join(dir, "pod-resources"), { recursive: true });
    await k.serveRegistration();
    k.podResources = await serve(path.join(dir, "pod-resources", "kubelet.sock"), kubeletApis().PodResourcesLister.service, {
      List: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
        k.podResourcesCalls++;
        cb(null, { pod_resources: k.pods });
      },
      GetAllocatableResources: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
      Get: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED, details: "stand-in" }),
    });
    return k;
  }

  private async serveRegistration(): Promise<void> {
    this.registration = await serve(path.join(this.pluginDir, "kubelet.sock"), kubeletApis().Registration.service, {
      Register: (call: grpc.ServerUnaryCall<RegisterRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.registrations.push({ ...call.request, at: Date.now() });
        cb(null, {});
      },
    });
  }

  /** Like a kubelet restart: every socket in device-plugins/ removed, kubelet.sock re-created. */
  async restart(): Promise<void> {
    await shutdown(this.registration);
    for (const f of fs.readdirSync(this.pluginDir)) fs.rmSync(path.join(this.pluginDir, f), { force: true });
    await new Promise((r) => setTimeout(r, 300));
    await this.serveRegistration();
  }

  /** A client of the plugin's DevicePlugin service at the endpoint it registered. */
  plugin(endpoint: string): PluginClient {
    return new PluginClient(path.join(this.pluginDir, endpoint));
  }

  async stop(): Promise<void> {
    await shutdown(this.registration);
    await shutdown(this.podResources);
  }
}

export class PluginClient {
  private readonly client: grpc.Client;
  readonly updates: Update[] = [];
  private stream: grpc.ClientReadableStream<ListAndWatchResponse> | undefined;

  constructor(socketPath: string) {
    this.client = new (kubeletApis().DevicePlugin)(`unix://${socketPath}`, grpc.credentials.createInsecure());
  }

  /** Opens ListAndWatch; every response lands in `updates`. */
  watch(): void {
    const stream = (this.client as unknown as { ListAndWatch(req: object): grpc.ClientReadableStream<ListAndWatchResponse> }).ListAndWatch({});
    stream.on("data", (res: ListAndWatchResponse) => this.updates.push({ at: Date.now(), devices: res.devices }));
    stream.on("error", () => undefined); // cancelled on close, or the plugin went away
    this.stream = stream;
  }

  latest(): Device[] | undefined {
    return this.updates[this.updates.length - 1]?.devices;
  }

  allocate(containers: string[][]): Promise<AllocateResponse> {
    return unary(this.client, "Allocate", { container_requests: containers.map((ids) => ({ devices_ids: ids })) }, 30_000);
  }

  options(): Promise<{ pre_start_required: boolean }> {
    return unary(this.client, "GetDevicePluginOptions", {});
  }

  close(): void {
    this.stream?.cancel();
    this.client.close();
  }
}

async function serve(socketPath: string, service: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): Promise<grpc.Server> {
  fs.rmSync(socketPath, { force: true });
  const server = new grpc.Server();
  server.addService(service, impl);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  return server;
}

async function shutdown(server: grpc.Server | undefined): Promise<void> {
  if (!server) return;
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  server.forceShutdown();
}
