// A lease in the shapes VMMs take: Firecracker's API bodies and jailer flag, QEMU's and
// Cloud Hypervisor's command-line arguments, and the guest kernel's boot argument. Pure
// functions of the lease: nothing here talks to the daemon or the kernel.
//
// Every slot's tap0 already exists, is up and carries the gateway address when the lease is
// granted, so a VMM must only open it: QEMU gets script=no/downscript=no, Cloud Hypervisor
// no ip=/mask= (either would reconfigure the host side), and the VMM must run inside the
// slot's namespace (lease.slot.netns), where tap0 lives.
import type { Lease } from "../core/types.js";

/** Body of Firecracker's `PUT /network-interfaces/{iface_id}` (swagger `NetworkInterface`). */
export interface FirecrackerNetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac: string;
  /** Advertised to the guest via VIRTIO_NET_F_MTU (Firecracker 1.17+; older ones reject it). */
  mtu?: number;
}

/** One entry of `network_overrides` in Firecracker's `PUT /snapshot/load` (swagger `NetworkOverride`). */
export interface FirecrackerNetworkOverride {
  iface_id: string;
  host_dev_name: string;
}

export interface FirecrackerOptions {
  /** The guest-facing interface id (default "eth0"). */
  ifaceId?: string;
  /** Include `mtu` (default true; set false for Firecracker before 1.17). */
  mtu?: boolean;
}

/** The `PUT /network-interfaces/{iface_id}` request for the lease's tap. */
export function firecrackerNetworkInterface(lease: Lease, opts: FirecrackerOptions = {}): { path: string; body: FirecrackerNetworkInterface } {
  const ifaceId = opts.ifaceId ?? "eth0";
  const body: FirecrackerNetworkInterface = { iface_id: ifaceId, host_dev_name: lease.slot.tap, guest_mac: lease.guest.mac };
  if (opts.mtu !== false) body.mtu = lease.guest.mtu;
  return { path: `/network-interfaces/${encodeURIComponent(ifaceId)}`, body };
}

/**
 * The `network_overrides` entry that points a restored snapshot at this lease's tap. Guest
 * address and MAC are the same in every slot, so a snapshot taken in any slot resumes here.
 */
export function firecrackerNetworkOverride(lease: Lease, ifaceId = "eth0"): FirecrackerNetworkOverride {
  return { iface_id: ifaceId, host_dev_name: lease.slot.tap };
}

/** The jailer's `--netns` flag: the jailer joins the slot's namespace before exec'ing Firecracker. */
export function jailerNetnsArgs(lease: Lease): string[] {
  return ["--netns", lease.slot.netns];
}

/** The kernel argument that configures the guest's address, gateway and interface (`ip=…`). */
export function kernelBootArg(lease: Lease): string {
  return lease.guest.kernelIpArg;
}

/** `boot_args` for Firecracker's `PUT /boot-source`: the given arguments plus the lease's `ip=`. */
export function firecrackerBootArgs(lease: Lease, base = "console=ttyS0 reboot=k panic=1 pci=off"): string {
  return `${base} ${kernelBootArg(lease)}`.trim();
}

export interface QemuOptions {
  /** The netdev id (default "net0"). */
  id?: string;
  /**
   * The machine type: `microvm` has no PCI bus and takes `virtio-net-device` (virtio-mmio);
   * every other machine takes `virtio-net-pci` (default "pc").
   */
  machine?: string;
  /** vhost=on (needs /dev/vhost-net in the VMM's reach; default off). */
  vhost?: boolean;
}

// QEMU option values are comma-separated: a comma inside a value is written twice.
function qemuValue(v: string): string {
  return v.replaceAll(",", ",,");
}

/** `-netdev tap,…` and `-device virtio-net-…,mac=…` for QEMU running in the slot's namespace. */
export function qemuNetArgs(lease: Lease, opts: QemuOptions = {}): string[] {
  const id = opts.id ?? "net0";
  const device = opts.machine === "microvm" ? "virtio-net-device" : "virtio-net-pci";
  return [
    "-netdev",
    `tap,id=${qemuValue(id)},ifname=${qemuValue(lease.slot.tap)},script=no,downscript=no${opts.vhost ? ",vhost=on" : ""}`,
    "-device",
    // host_mtu advertises the slot's MTU to the guest (VIRTIO_NET_F_MTU).
    `${device},netdev=${qemuValue(id)},mac=${lease.guest.mac},host_mtu=${lease.guest.mtu}`,
  ];
}

/** Cloud Hypervisor's `--net` for the lease's tap (no ip=/mask=: tap0 is configured already). */
export function cloudHypervisorNetArgs(lease: Lease): string[] {
  return ["--net", `tap=${lease.slot.tap},mac=${lease.guest.mac},mtu=${lease.guest.mtu}`];
}

/** A command prefix that runs a VMM in the slot's namespace: `nsenter --net=<netns> --`. */
export function netnsExecArgs(lease: Lease): string[] {
  return ["nsenter", `--net=${lease.slot.netns}`, "--"];
}
