// The kubelet's gRPC APIs from the vendored upstream .proto files (proto/kubelet), loaded at
// run time by @grpc/proto-loader, with the few message shapes netslot reads or writes.
// Field names are kept as in the .proto files (keepCase) so they read like upstream docs.
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PACKAGE_ROOT } from "../core/version.js";

export const PROTO_DIR = path.join(PACKAGE_ROOT, "proto", "kubelet");

export const DEVICE_PLUGIN_VERSION = "v1beta1";
export const HEALTHY = "Healthy";
export const UNHEALTHY = "Unhealthy";

export interface Device {
  ID: string;
  health: string;
}
export interface ListAndWatchResponse {
  devices: Device[];
}
export interface RegisterRequest {
  version: string;
  endpoint: string;
  resource_name: string;
  options?: { pre_start_required: boolean; get_preferred_allocation_available: boolean };
}
export interface AllocateRequest {
  container_requests: Array<{ devices_ids: string[] }>;
}
export interface Mount {
  container_path: string;
  host_path: string;
  read_only: boolean;
}
export interface ContainerAllocateResponse {
  envs: Record<string, string>;
  mounts: Mount[];
}
export interface AllocateResponse {
  container_responses: ContainerAllocateResponse[];
}
export interface ContainerDevices {
  resource_name: string;
  device_ids: string[];
}
export interface PodResources {
  name: string;
  namespace: string;
  containers: Array<{ name: string; devices: ContainerDevices[] }>;
}
export interface ListPodResourcesResponse {
  pod_resources: PodResources[];
}

type ServiceCtor = grpc.ServiceClientConstructor;

export interface KubeletApis {
  /** v1beta1.Registration (served by the kubelet). */
  Registration: ServiceCtor;
  /** v1beta1.DevicePlugin (served by the plugin). */
  DevicePlugin: ServiceCtor;
  /** v1.PodResourcesLister (served by the kubelet). */
  PodResourcesLister: ServiceCtor;
}

let apis: KubeletApis | undefined;

export function kubeletApis(): KubeletApis {
  if (apis) return apis;
  const options: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };
  const dp = grpc.loadPackageDefinition(protoLoader.loadSync("deviceplugin/v1beta1/api.proto", options)) as unknown as {
    v1beta1: { Registration: ServiceCtor; DevicePlugin: ServiceCtor };
  };
  const pr = grpc.loadPackageDefinition(protoLoader.loadSync("podresources/v1/api.proto", options)) as unknown as {
    v1: { PodResourcesLister: ServiceCtor };
  };
  apis = { Registration: dp.v1beta1.Registration, DevicePlugin: dp.v1beta1.DevicePlugin, PodResourcesLister: pr.v1.PodResourcesLister };
  return apis;
}

/** A unary call as a promise, with a deadline. */
export function unary<Res>(client: grpc.Client, method: string, request: object, timeoutMs = 5000): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => void>)[method];
    if (!fn) {
      reject(new Error(`no method ${method}`));
      return;
    }
    fn.call(client, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}
