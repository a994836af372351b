// The netslot SDK: `import { NetslotClient } from "netslot"`.
export {
  NetslotClient,
  NetslotApiError,
  NetslotConnectionError,
  DEFAULT_SOCKET_PATH,
  type AcquireOptions,
  type NetslotClientOptions,
} from "./client.js";
// Every wire shape of the API (Lease, LeaseRequest, PoolCounts, …), as the contract defines it.
export type * from "../core/schema.js";
export type { LeaseService } from "../core/types.js";
export type { ErrorCode } from "../core/errors.js";
export { isErrorCode } from "../core/errors.js";
// A lease in each VMM's shape (Firecracker, its jailer, QEMU, Cloud Hypervisor): pure functions.
export * from "./vmm.js";
