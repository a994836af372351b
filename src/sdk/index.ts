// The netslot SDK: `import { NetslotClient } from "netslot"`.
export {
  NetslotClient,
  NetslotApiError,
  NetslotConnectionError,
  DEFAULT_SOCKET_PATH,
  type AcquireOptions,
  type NetslotClientOptions,
} from "./client.js";
export type {
  ConsumerUsage,
  GuestConfig,
  Health,
  Lease,
  LeaseRequest,
  LeaseService,
  PoolCounts,
  QuarantinedSlot,
  SlotRef,
  SlotState,
  TenantNetwork,
  UpgradeResult,
} from "../core/types.js";
export type { DrainState, LeaseEnd, LeaseList, SlotStateResult, Problem } from "../core/schema.js";
export type { ErrorCode } from "../core/errors.js";
export { isErrorCode } from "../core/errors.js";
export {
  cloudHypervisorNetArgs,
  firecrackerBootArgs,
  firecrackerNetworkInterface,
  firecrackerNetworkOverride,
  jailerNetnsArgs,
  kernelBootArg,
  netnsExecArgs,
  qemuNetArgs,
  type FirecrackerNetworkInterface,
  type FirecrackerNetworkOverride,
  type FirecrackerOptions,
  type QemuOptions,
} from "./vmm.js";
