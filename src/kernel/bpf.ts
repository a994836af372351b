// libbpf (1.1 API) through koffi: load bpf/nat.o once per daemon, pin its two tc programs
// and two maps under a directory of the BPF filesystem, adopt them again after a restart,
// upgrade the programs in place over the same maps when the object changed, and update
// the maps with plain bpf(2) map operations (microseconds, no process).
// Everything is synchronous, like the rest of the kernel layer.
import * as fs from "node:fs";
import * as path from "node:path";
import koffi from "koffi";
import * as libc from "./libc.js";
import {
  CONFIG_KEY_SIZE,
  CONFIG_VALUE_SIZE,
  MAP_CONFIG,
  MAP_RATES,
  MAP_UNATTRIBUTED,
  MAP_SLOTS,
  MAP_POLICIES,
  MAP_POLICY_CIDRS,
  MAX_POLICY_CIDRS,
  POLICY_CIDR_KEY_SIZE,
  POLICY_CIDR_VALUE_SIZE,
  POLICY_KEY_SIZE,
  POLICY_VALUE_SIZE,
  decodePolicyCidrKey,
  decodePolicyCidrValue,
  decodeSlotPolicy,
  encodePolicyCidrKey,
  encodePolicyCidrValue,
  encodeSlotPolicy,
  type PolicyCidr,
  type SlotPolicy,
  MAP_SLOTS6,
  SLOT6_KEY_SIZE,
  SLOT6_VALUE_SIZE,
  decodeSlot6Value,
  encodeSlot6Key,
  encodeSlot6Value,
  type SlotNat6,
  RATE_KEY_SIZE,
  RATE_VALUE_SIZE,
  decodeRateValue,
  encodeRateKey,
  encodeRateValue,
  type SlotRate,
  MAX_SLOTS,
  PROG_EGRESS,
  PROG_INGRESS,
  SLOT_KEY_SIZE,
  SLOT_VALUE_SIZE,
  assertVni,
  decodeConfig,
  decodeSlotKey,
  decodeSlotValue,
  encodeConfig,
  encodeSlotKey,
  encodeSlotValue,
  type NatConfig,
  type SlotNat,
  type SlotNatEntry,
} from "./bpfmaps.js";

export const BPFFS_ROOT = "/sys/fs/bpf";

const BPF_PROG_TYPE_SCHED_CLS = 3;
const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_ARRAY = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
const BPF_MAP_TYPE_LPM_TRIE = 11;
const BPF_ANY = 0;
const BPF_EXIST = 2;
// Kernel and libbpf structs below are laid out for LP64 little-endian hosts (x86_64, arm64).
/** sizeof(struct bpf_test_run_opts) on LP64 (libbpf 1.1). */
const TEST_RUN_OPTS_SIZE = 80;
/** Room for struct __sk_buff as returned in ctx_out (192 bytes on 6.x kernels). */
const SKB_CTX_SIZE = 256;
const SKB_CTX_CB_OFFSET = 48;
/** sizeof(struct __sk_buff) on 6.x kernels: what ctx_in may hold. */
const SKB_CTX_IN_SIZE = 192;

const lib = koffi.load("libbpf.so.1");

const PrintFn = koffi.proto("int netslot_libbpf_print_fn(int level, const char *fmt, void *ap)");

const b = {
  setPrint: lib.func("void *libbpf_set_print(netslot_libbpf_print_fn *fn)"),
  openFile: lib.func("void *bpf_object__open_file(const char *path, const void *opts)"),
  load: lib.func("int bpf_object__load(void *obj)"),
  closeObject: lib.func("void bpf_object__close(void *obj)"),
  findProgram: lib.func("void *bpf_object__find_program_by_name(void *obj, const char *name)"),
  programFd: lib.func("int bpf_program__fd(void *prog)"),
  findMapFd: lib.func("int bpf_object__find_map_fd_by_name(void *obj, const char *name)"),
  findMap: lib.func("void *bpf_object__find_map_by_name(void *obj, const char *name)"),
  mapReuseFd: lib.func("int bpf_map__reuse_fd(void *map, int fd)"),
  mapType: lib.func("int bpf_map__type(void *map)"),
  mapKeySize: lib.func("uint32_t bpf_map__key_size(void *map)"),
  mapValueSize: lib.func("uint32_t bpf_map__value_size(void *map)"),
  mapMaxEntries: lib.func("uint32_t bpf_map__max_entries(void *map)"),
  objPin: lib.func("int bpf_obj_pin(int fd, const char *path)"),
  objGet: lib.func("int bpf_obj_get(const char *path)"),
  objInfo: lib.func("int bpf_obj_get_info_by_fd(int fd, _Inout_ uint8_t *info, _Inout_ uint32_t *len)"),
  mapUpdate: lib.func("int bpf_map_update_elem(int fd, const uint8_t *key, const uint8_t *value, uint64_t flags)"),
  mapLookup: lib.func("int bpf_map_lookup_elem(int fd, const uint8_t *key, _Out_ uint8_t *value)"),
  mapDelete: lib.func("int bpf_map_delete_elem(int fd, const uint8_t *key)"),
  mapNextKey: lib.func("int bpf_map_get_next_key(int fd, const uint8_t *key, _Out_ uint8_t *next)"),
  testRun: lib.func("int bpf_prog_test_run_opts(int fd, _Inout_ uint8_t *opts)"),
};

// libbpf reports through a print callback; keep its warnings so a failed load can say why
// (the verifier log arrives this way) instead of writing to the daemon's stderr.
// Levels: 0 warn, 1 info, 2 debug (dropped).
const LIBBPF_INFO = 1;
const printBuf = Buffer.alloc(8192);
let libbpfLog: string[] = [];
const printCallback = koffi.register((level: number, fmt: string, ap: bigint): number => {
  if (level > LIBBPF_INFO) return 0;
  const n = libc.vsnprintf(printBuf, fmt, ap);
  if (n > 0) libbpfLog.push(printBuf.toString("utf8", 0, Math.min(n, printBuf.length - 1)));
  if (libbpfLog.length > 400) libbpfLog = libbpfLog.slice(-200);
  return 0;
}, koffi.pointer(PrintFn));
b.setPrint(printCallback);

function takeLibbpfLog(): string {
  const text = libbpfLog.join("").trimEnd();
  libbpfLog = [];
  return text;
}

/** libbpf 1.x returns -errno; turn that into the project's SyscallError. */
function checkRet(name: string, ret: number, detail?: string): number {
  if (ret < 0) throw new libc.SyscallError(name, -ret, detail);
  return ret;
}

/** Identity of a loaded program, as `bpftool prog show` prints it. */
export interface ProgramInfo {
  id: number;
  /** Hex of the 8-byte program tag (a hash of the instructions). */
  tag: string;
  type: number;
}

interface MapInfo {
  id: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

/** `bpftool prog show id N` for an open program fd (bpf_obj_get_info_by_fd). */
export function programInfo(fd: number): ProgramInfo {
  const info = Buffer.alloc(80);
  const len = [info.length];
  checkRet("bpf_obj_get_info_by_fd", b.objInfo(fd, info, len) as number);
  return { type: info.readUInt32LE(0), id: info.readUInt32LE(4), tag: info.subarray(8, 16).toString("hex") };
}

function mapInfo(fd: number): MapInfo {
  const info = Buffer.alloc(40);
  const len = [info.length];
  checkRet("bpf_obj_get_info_by_fd", b.objInfo(fd, info, len) as number);
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
  };
}

/** True when `dir` itself is a mount point of the BPF filesystem (per /proc/self/mountinfo). */
function isBpffsMounted(dir: string): boolean {
  const lines = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n");
  for (const line of lines) {
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const mountPoint = left.split(" ")[4];
    if (mountPoint === dir && right.split(" ")[0] === "bpf") return true;
  }
  return false;
}

/** `mount -t bpf bpf /sys/fs/bpf` unless it is mounted already. */
export function ensureBpffs(): void {
  if (isBpffsMounted(BPFFS_ROOT)) return;
  fs.mkdirSync(BPFFS_ROOT, { recursive: true });
  libc.mount("bpf", BPFFS_ROOT, "bpf", 0);
}

/** The maps of bpf/nat.o, as pinned; the order of the descriptors PinnedDataplane takes. */
const MAP_NAMES = [MAP_SLOTS, MAP_CONFIG, MAP_RATES, MAP_UNATTRIBUTED, MAP_POLICY_CIDRS, MAP_POLICIES, MAP_SLOTS6] as const;
const PIN_NAMES = [PROG_EGRESS, PROG_INGRESS, ...MAP_NAMES] as const;
/**
 * Maps added after the first release: a pin directory of an older netslot lacks them, and
 * the in-place upgrade creates and pins them (upgradePrograms).
 */
const ADDED_MAPS: ReadonlySet<string> = new Set([MAP_RATES, MAP_UNATTRIBUTED, MAP_POLICY_CIDRS, MAP_POLICIES, MAP_SLOTS6]);
const CORE_PINS = PIN_NAMES.filter((name) => !ADDED_MAPS.has(name));

function pinsPresent(dir: string): number {
  return PIN_NAMES.filter((name) => fs.existsSync(path.join(dir, name))).length;
}

function isEmptyDir(dir: string): boolean {
  try {
    return fs.readdirSync(dir).length === 0;
  } catch {
    return false;
  }
}

/**
 * Removes a pin directory and everything in it (`rm -r /sys/fs/bpf/netslot/P`);
 * idempotent. Programs still attached to tc stay alive until detached.
 */
export function removePinned(pinDir: string): void {
  fs.rmSync(pinDir, { recursive: true, force: true });
}

/** The loaded NAT programs and their maps, as one daemon uses them. */
export interface Dataplane {
  readonly pinDir: string;
  /** True when the programs were found pinned and reused rather than loaded. */
  readonly adopted: boolean;
  readonly egressProgFd: number;
  readonly ingressProgFd: number;
  readonly egressProgId: number;
  readonly ingressProgId: number;
  readonly egressProgTag: string;
  readonly ingressProgTag: string;
  /** `bpftool map update pinned …/config key 0 0 0 0 value …` */
  setConfig(cfg: NatConfig): void;
  /** `bpftool map lookup pinned …/config key 0 0 0 0` */
  getConfig(): NatConfig;
  /** Creates or replaces the slot's entry (`bpftool map update pinned …/slots key … value …`). */
  putSlot(mac: string, slot: SlotNat): void;
  /** Changes only the VNI of an existing entry (the ifindex stays); throws ENOENT when there is none. */
  setSlotVni(mac: string, vni: number): void;
  /** `bpftool map delete pinned …/slots key …`; returns false when there was no entry. */
  deleteSlot(mac: string): boolean;
  /** `bpftool map lookup pinned …/slots key …` */
  getSlot(mac: string): SlotNat | undefined;
  /** `bpftool map dump pinned …/slots` */
  slotEntries(): SlotNatEntry[];
  /** Sets (or, with undefined, removes) the bandwidth of the slot with this outside address. */
  setRate(outsideAddress: string, rate: SlotRate | undefined): void;
  /** The configured bandwidth of the slot, undefined when it has none. */
  getRate(outsideAddress: string): SlotRate | undefined;
  /** Sets (or, with undefined, removes) the IPv6 translation of the slot whose eth0 has this ifindex. */
  setSlot6(ifindex: number, nat: SlotNat6 | undefined): void;
  /** The slot's IPv6 translation, undefined when its lease has no IPv6. */
  getSlot6(ifindex: number): SlotNat6 | undefined;
  /** IPv4 frames the programs dropped because no slot owns them, summed over CPUs since load. */
  unattributedDrops(): bigint;
  /**
   * Makes the shared `policy_cidrs` trie hold exactly `cidrs`: writes each (a rewrite of an
   * unchanged entry is harmless), then deletes what is not among them. Returns the count deleted.
   */
  syncPolicyCidrs(cidrs: readonly PolicyCidr[]): number;
  /** The trie's entries, in no particular order. */
  policyCidrs(): PolicyCidr[];
  /** Sets (or, with undefined, removes) the egress policy of the slot with this outside address. */
  setSlotPolicy(outsideAddress: string, policy: SlotPolicy | undefined): void;
  /** The slot's egress policy entry, undefined when it has none. */
  getSlotPolicy(outsideAddress: string): SlotPolicy | undefined;
  /** Closes this process's descriptors; the pinned objects remain. */
  close(): void;
  /** Closes and removes the pin directory (purge); idempotent. */
  unpin(): void;
}

class PinnedDataplane implements Dataplane {
  readonly egressProgId: number;
  readonly ingressProgId: number;
  readonly egressProgTag: string;
  readonly ingressProgTag: string;
  private closed = false;
  private readonly slotValue = Buffer.alloc(SLOT_VALUE_SIZE);

  constructor(
    readonly pinDir: string,
    readonly adopted: boolean,
    readonly egressProgFd: number,
    readonly ingressProgFd: number,
    private readonly slotsFd: number,
    private readonly configFd: number,
    private readonly ratesFd: number,
    private readonly unattributedFd: number,
    private readonly policyCidrsFd: number,
    private readonly policiesFd: number,
    private readonly slots6Fd: number,
  ) {
    const egress = programInfo(egressProgFd);
    const ingress = programInfo(ingressProgFd);
    this.egressProgId = egress.id;
    this.ingressProgId = ingress.id;
    this.egressProgTag = egress.tag;
    this.ingressProgTag = ingress.tag;
  }

  private fd(which: number): number {
    if (this.closed) throw new Error(`dataplane ${this.pinDir} is closed`);
    return which;
  }

  setConfig(cfg: NatConfig): void {
    const key = Buffer.alloc(CONFIG_KEY_SIZE);
    // An array entry is overwritten in place; the config is set once, before slots exist.
    checkRet("bpf_map_update_elem", b.mapUpdate(this.fd(this.configFd), key, encodeConfig(cfg), BPF_ANY) as number, MAP_CONFIG);
  }

  getConfig(): NatConfig {
    const key = Buffer.alloc(CONFIG_KEY_SIZE);
    const value = Buffer.alloc(CONFIG_VALUE_SIZE);
    checkRet("bpf_map_lookup_elem", b.mapLookup(this.fd(this.configFd), key, value) as number, MAP_CONFIG);
    return decodeConfig(value);
  }

  putSlot(mac: string, slot: SlotNat): void {
    // A hash update swaps the element under RCU: the programs see the old or the new value.
    checkRet("bpf_map_update_elem", b.mapUpdate(this.fd(this.slotsFd), encodeSlotKey(mac), encodeSlotValue(slot), BPF_ANY) as number, mac);
  }

  setSlotVni(mac: string, vni: number): void {
    assertVni(vni);
    const key = encodeSlotKey(mac);
    const value = this.slotValue;
    checkRet("bpf_map_lookup_elem", b.mapLookup(this.fd(this.slotsFd), key, value) as number, mac);
    const current = decodeSlotValue(value);
    checkRet(
      "bpf_map_update_elem",
      b.mapUpdate(this.slotsFd, key, encodeSlotValue({ ...current, vni }), BPF_EXIST) as number,
      mac,
    );
  }

  deleteSlot(mac: string): boolean {
    const ret = b.mapDelete(this.fd(this.slotsFd), encodeSlotKey(mac)) as number;
    if (ret === -libc.ENOENT) return false;
    checkRet("bpf_map_delete_elem", ret, mac);
    return true;
  }

  getSlot(mac: string): SlotNat | undefined {
    const value = Buffer.alloc(SLOT_VALUE_SIZE);
    const ret = b.mapLookup(this.fd(this.slotsFd), encodeSlotKey(mac), value) as number;
    if (ret === -libc.ENOENT) return undefined;
    checkRet("bpf_map_lookup_elem", ret, mac);
    return decodeSlotValue(value);
  }

  slotEntries(): SlotNatEntry[] {
    const fd = this.fd(this.slotsFd);
    const entries: SlotNatEntry[] = [];
    const seen = new Set<string>();
    let key: Buffer | null = null;
    const value = Buffer.alloc(SLOT_VALUE_SIZE);
    // Bounded: get_next_key restarts from the first key if `key` vanished meanwhile.
    for (let i = 0; i <= MAX_SLOTS; i++) {
      const next = Buffer.alloc(SLOT_KEY_SIZE);
      const ret = b.mapNextKey(fd, key, next) as number;
      if (ret === -libc.ENOENT) break;
      checkRet("bpf_map_get_next_key", ret, MAP_SLOTS);
      key = next;
      const mac = decodeSlotKey(next);
      if (seen.has(mac)) continue;
      const lookup = b.mapLookup(fd, next, value) as number;
      if (lookup === -libc.ENOENT) continue;
      checkRet("bpf_map_lookup_elem", lookup, mac);
      seen.add(mac);
      entries.push({ mac, ...decodeSlotValue(value) });
    }
    return entries;
  }

  setRate(outsideAddress: string, rate: SlotRate | undefined): void {
    const key = encodeRateKey(outsideAddress);
    if (rate === undefined) {
      const ret = b.mapDelete(this.fd(this.ratesFd), key) as number;
      if (ret !== -libc.ENOENT) checkRet("bpf_map_delete_elem", ret, MAP_RATES);
      return;
    }
    // A whole new value: full buckets. The kernel never copies the lock from user space.
    checkRet("bpf_map_update_elem", b.mapUpdate(this.fd(this.ratesFd), key, encodeRateValue(rate), BPF_ANY) as number, MAP_RATES);
  }

  setSlot6(ifindex: number, nat: SlotNat6 | undefined): void {
    const key = encodeSlot6Key(ifindex);
    if (nat === undefined) {
      const ret = b.mapDelete(this.fd(this.slots6Fd), key) as number;
      if (ret !== -libc.ENOENT) checkRet("bpf_map_delete_elem", ret, MAP_SLOTS6);
      return;
    }
    checkRet("bpf_map_update_elem", b.mapUpdate(this.fd(this.slots6Fd), key, encodeSlot6Value(nat), BPF_ANY) as number, MAP_SLOTS6);
  }

  getSlot6(ifindex: number): SlotNat6 | undefined {
    const value = Buffer.alloc(SLOT6_VALUE_SIZE);
    const ret = b.mapLookup(this.fd(this.slots6Fd), encodeSlot6Key(ifindex), value) as number;
    if (ret === -libc.ENOENT) return undefined;
    checkRet("bpf_map_lookup_elem", ret, MAP_SLOTS6);
    return decodeSlot6Value(value);
  }

  unattributedDrops(): bigint {
    // A per-CPU value is read as one u64 per possible CPU.
    const value = Buffer.alloc(8 * possibleCpus());
    checkRet("bpf_map_lookup_elem", b.mapLookup(this.fd(this.unattributedFd), Buffer.alloc(4), value) as number, MAP_UNATTRIBUTED);
    let sum = 0n;
    for (let off = 0; off < value.length; off += 8) sum += value.readBigUInt64LE(off);
    return sum;
  }

  syncPolicyCidrs(cidrs: readonly PolicyCidr[]): number {
    if (cidrs.length > MAX_POLICY_CIDRS) throw new Error(`${cidrs.length} profile CIDRs, the trie holds at most ${MAX_POLICY_CIDRS}`);
    const fd = this.fd(this.policyCidrsFd);
    const wanted = new Set<string>();
    for (const c of cidrs) {
      const key = encodePolicyCidrKey(c);
      wanted.add(key.toString("hex"));
      checkRet("bpf_map_update_elem", b.mapUpdate(fd, key, encodePolicyCidrValue(c.deny), BPF_ANY) as number, MAP_POLICY_CIDRS);
    }
    let deleted = 0;
    for (const c of this.policyCidrs()) {
      const key = encodePolicyCidrKey(c);
      if (wanted.has(key.toString("hex"))) continue;
      const ret = b.mapDelete(fd, key) as number;
      if (ret !== -libc.ENOENT) checkRet("bpf_map_delete_elem", ret, MAP_POLICY_CIDRS);
      deleted++;
    }
    return deleted;
  }

  policyCidrs(): PolicyCidr[] {
    const fd = this.fd(this.policyCidrsFd);
    const out: PolicyCidr[] = [];
    const value = Buffer.alloc(POLICY_CIDR_VALUE_SIZE);
    let key: Buffer | null = null;
    for (let i = 0; i <= MAX_POLICY_CIDRS; i++) {
      const next = Buffer.alloc(POLICY_CIDR_KEY_SIZE);
      const ret = b.mapNextKey(fd, key, next) as number;
      if (ret === -libc.ENOENT) break;
      checkRet("bpf_map_get_next_key", ret, MAP_POLICY_CIDRS);
      key = next;
      const lookup = b.mapLookup(fd, next, value) as number;
      if (lookup === -libc.ENOENT) continue;
      checkRet("bpf_map_lookup_elem", lookup, MAP_POLICY_CIDRS);
      out.push({ ...decodePolicyCidrKey(next), deny: decodePolicyCidrValue(value) });
    }
    return out;
  }

  setSlotPolicy(outsideAddress: string, policy: SlotPolicy | undefined): void {
    const key = encodeRateKey(outsideAddress);
    if (policy === undefined) {
      const ret = b.mapDelete(this.fd(this.policiesFd), key) as number;
      if (ret !== -libc.ENOENT) checkRet("bpf_map_delete_elem", ret, MAP_POLICIES);
      return;
    }
    checkRet("bpf_map_update_elem", b.mapUpdate(this.fd(this.policiesFd), key, encodeSlotPolicy(policy), BPF_ANY) as number, MAP_POLICIES);
  }

  getSlotPolicy(outsideAddress: string): SlotPolicy | undefined {
    const value = Buffer.alloc(POLICY_VALUE_SIZE);
    const ret = b.mapLookup(this.fd(this.policiesFd), encodeRateKey(outsideAddress), value) as number;
    if (ret === -libc.ENOENT) return undefined;
    checkRet("bpf_map_lookup_elem", ret, MAP_POLICIES);
    return decodeSlotPolicy(value);
  }

  getRate(outsideAddress: string): SlotRate | undefined {
    const value = Buffer.alloc(RATE_VALUE_SIZE);
    const ret = b.mapLookup(this.fd(this.ratesFd), encodeRateKey(outsideAddress), value) as number;
    if (ret === -libc.ENOENT) return undefined;
    checkRet("bpf_map_lookup_elem", ret, MAP_RATES);
    return decodeRateValue(value);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [this.egressProgFd, this.ingressProgFd, this.slotsFd, this.configFd, this.ratesFd, this.unattributedFd, this.policyCidrsFd, this.policiesFd, this.slots6Fd]) libc.close(fd);
  }

  unpin(): void {
    this.close();
    removePinned(this.pinDir);
  }
}

/** Opens the pinned objects without loading anything; undefined when nothing is pinned there (`netslot check`). */
export function openPinnedDataplane(pinDir: string): Dataplane | undefined {
  if (pinsPresent(pinDir) !== PIN_NAMES.length) return undefined;
  return adopt(pinDir, true);
}

/** Opens the four pinned objects and checks they are what this code expects. */
function adopt(pinDir: string, adopted: boolean): Dataplane {
  const fds: number[] = [];
  try {
    for (const name of PIN_NAMES) {
      const file = path.join(pinDir, name);
      fds.push(checkRet("bpf_obj_get", b.objGet(file) as number, file));
    }
    const [egress, ingress, slots, config, rates, unattributed, policyCidrs, policies, slots6] = fds as [number, number, number, number, number, number, number, number, number];
    for (const [fd, name] of [[egress, PROG_EGRESS], [ingress, PROG_INGRESS]] as const) {
      const info = programInfo(fd);
      if (info.type !== BPF_PROG_TYPE_SCHED_CLS) throw new Error(`${pinDir}/${name} is not a tc program (type ${info.type})`);
    }
    const expect = (fd: number, name: string, type: number, keySize: number, valueSize: number): void => {
      const info = mapInfo(fd);
      if (info.type !== type || info.keySize !== keySize || info.valueSize !== valueSize) {
        throw new Error(
          `${pinDir}/${name} has another layout (type ${info.type}, key ${info.keySize}, value ${info.valueSize}); ` +
            `expected type ${type}, key ${keySize}, value ${valueSize}: remove the pin directory and reload`,
        );
      }
    };
    expect(slots, MAP_SLOTS, BPF_MAP_TYPE_HASH, SLOT_KEY_SIZE, SLOT_VALUE_SIZE);
    expect(config, MAP_CONFIG, BPF_MAP_TYPE_ARRAY, CONFIG_KEY_SIZE, CONFIG_VALUE_SIZE);
    expect(rates, MAP_RATES, BPF_MAP_TYPE_HASH, RATE_KEY_SIZE, RATE_VALUE_SIZE);
    expect(unattributed, MAP_UNATTRIBUTED, BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8);
    expect(policyCidrs, MAP_POLICY_CIDRS, BPF_MAP_TYPE_LPM_TRIE, POLICY_CIDR_KEY_SIZE, POLICY_CIDR_VALUE_SIZE);
    expect(policies, MAP_POLICIES, BPF_MAP_TYPE_HASH, POLICY_KEY_SIZE, POLICY_VALUE_SIZE);
    expect(slots6, MAP_SLOTS6, BPF_MAP_TYPE_HASH, SLOT6_KEY_SIZE, SLOT6_VALUE_SIZE);
    return new PinnedDataplane(pinDir, adopted, egress, ingress, slots, config, rates, unattributed, policyCidrs, policies, slots6);
  } catch (err) {
    for (const fd of fds) libc.close(fd);
    throw err;
  }
}

/** Loads the object and pins its programs and maps into `dir` (which must not exist). */
function loadAndPin(objectPath: string, dir: string): void {
  takeLibbpfLog();
  const obj = b.openFile(objectPath, null) as bigint | null;
  if (!obj) {
    const errno = libc.errno();
    throw new libc.SyscallError("bpf_object__open_file", errno, `${objectPath}\n${takeLibbpfLog()}`);
  }
  try {
    const ret = b.load(obj) as number;
    if (ret < 0) throw new libc.SyscallError("bpf_object__load", -ret, `${objectPath}\n${takeLibbpfLog()}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    for (const name of [PROG_EGRESS, PROG_INGRESS]) {
      const prog = b.findProgram(obj, name) as bigint | null;
      if (!prog) throw new Error(`${objectPath} has no program ${name}`);
      checkRet("bpf_obj_pin", b.objPin(b.programFd(prog) as number, path.join(dir, name)) as number, name);
    }
    for (const name of MAP_NAMES) {
      const fd = b.findMapFd(obj, name) as number;
      if (fd < 0) throw new Error(`${objectPath} has no map ${name}`);
      checkRet("bpf_obj_pin", b.objPin(fd, path.join(dir, name)) as number, name);
    }
  } finally {
    // The pins keep programs and maps alive; the object's own descriptors are not needed.
    b.closeObject(obj);
    takeLibbpfLog();
  }
}

/**
 * Returns the daemon's data path from `pinDir` (e.g. /sys/fs/bpf/netslot/P): the pinned
 * programs and maps if they are there (no reload: attached filters keep working and the
 * map contents survive a restart), else loads `objectPath` and pins them (what
 * `bpftool prog loadall nat.o DIR pinmaps DIR` does). The pins appear all at once: they
 * are made in a scratch directory that is then renamed to `pinDir`.
 */
export function loadDataplane(objectPath: string, pinDir: string): Dataplane {
  ensureBpffs();
  const present = pinsPresent(pinDir);
  if (present === PIN_NAMES.length) return adopt(pinDir, true);
  if (present === 0 && isEmptyDir(pinDir)) fs.rmdirSync(pinDir);
  if (present > 0 || fs.existsSync(pinDir)) {
    throw new Error(`${pinDir} holds an incomplete set of pinned objects: remove it (purge) and load again`);
  }
  fs.mkdirSync(path.dirname(pinDir), { recursive: true, mode: 0o700 });
  // bpffs refuses names with a dot.
  const scratch = `${pinDir}-loading-${process.pid}`;
  removePinned(scratch);
  try {
    loadAndPin(objectPath, scratch);
    try {
      fs.renameSync(scratch, pinDir);
    } catch (err) {
      // Another loader won the race: use its objects.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      return adopt(pinDir, true);
    }
    return adopt(pinDir, false);
  } finally {
    removePinned(scratch);
  }
}

/** New programs loaded over the pinned maps, not yet attached anywhere nor pinned. */
export interface ProgramUpgrade {
  readonly egressProgFd: number;
  readonly ingressProgFd: number;
  readonly egressTag: string;
  readonly ingressTag: string;
  /** Tags of the programs pinned before the upgrade. */
  readonly previousEgressTag: string;
  readonly previousIngressTag: string;
  /**
   * Maps whose layout changed (key, value, type or size): new, empty maps the new programs
   * use, by name, to be filled before any filter is switched; commit pins them too.
   */
  readonly newMaps: ReadonlyMap<string, number>;
  /** Writes one NAT entry into the new slots map (the new code's encoding). */
  putNewSlot(mac: string, slot: SlotNat): void;
  /**
   * Sets the eth0 ifindex of an existing entry in the slots map the new programs use, before
   * its filters switch: entries written by a version that left the field 0 are bound here.
   */
  bindSlot(mac: string, ifindex: number): void;
  /**
   * Re-pins the new programs over the old names (`bpftool prog pin` to NAME-new, then
   * `mv NAME-new NAME`, atomic per program) and closes the object: the pins and the tc
   * filters keep the programs alive, the old ones go when their last filter does.
   */
  commit(): void;
  /** Closes the new programs without pinning them (filters already switched keep them). */
  abandon(): void;
}

/**
 * Loads `objectPath` against the maps pinned in `pinDir` (bpf_map__reuse_fd: no new
 * maps, every slot's NAT entry and VNI stay), and returns its programs when their tags
 * differ from the pinned programs' (`bpftool prog show pinned DIR/nat_egress`); undefined
 * when nothing is pinned or the programs are the same. Refuses when the object's map
 * layouts differ from the pinned maps': such a data path needs a rebuild, not an upgrade.
 */
export function upgradePrograms(objectPath: string, pinDir: string): ProgramUpgrade | undefined {
  if (CORE_PINS.some((name) => !fs.existsSync(path.join(pinDir, name)))) return undefined;
  const pinned: number[] = [];
  const reused = new Map<string, number>();
  const changedMaps: string[] = [];
  let obj: bigint | null = null;
  try {
    for (const name of PIN_NAMES) {
      const file = path.join(pinDir, name);
      if (ADDED_MAPS.has(name) && !fs.existsSync(file)) continue;
      const fd = checkRet("bpf_obj_get", b.objGet(file) as number, file);
      pinned.push(fd);
      reused.set(name, fd);
    }
    const oldEgress = reused.get(PROG_EGRESS)!;
    const oldIngress = reused.get(PROG_INGRESS)!;
    const previousEgressTag = programInfo(oldEgress).tag;
    const previousIngressTag = programInfo(oldIngress).tag;

    takeLibbpfLog();
    obj = b.openFile(objectPath, null) as bigint | null;
    if (!obj) {
      const errno = libc.errno();
      throw new libc.SyscallError("bpf_object__open_file", errno, `${objectPath}\n${takeLibbpfLog()}`);
    }
    for (const name of MAP_NAMES) {
      const fd = reused.get(name);
      // A map this pin directory predates: the load creates it, the commit pins it.
      if (fd === undefined) continue;
      const map = b.findMap(obj, name) as bigint | null;
      if (!map) throw new Error(`${objectPath} has no map ${name}`);
      // Compared before reuse_fd, which overwrites the object's definition with the pinned one.
      const want = {
        type: b.mapType(map) as number,
        keySize: b.mapKeySize(map) as number,
        valueSize: b.mapValueSize(map) as number,
        maxEntries: b.mapMaxEntries(map) as number,
      };
      const have = mapInfo(fd);
      if (want.type !== have.type || want.keySize !== have.keySize || want.valueSize !== have.valueSize || want.maxEntries !== have.maxEntries) {
        // A new map layout: libbpf creates the map afresh and the caller migrates the
        // entries (their old encoding is the old code's, so they are derived again).
        changedMaps.push(name);
        continue;
      }
      // libbpf keeps its own duplicate of the descriptor.
      checkRet("bpf_map__reuse_fd", b.mapReuseFd(map, fd) as number, name);
    }
    const ret = b.load(obj) as number;
    if (ret < 0) throw new libc.SyscallError("bpf_object__load", -ret, `${objectPath}\n${takeLibbpfLog()}`);
    takeLibbpfLog();
    const progFd = (name: string): number => {
      const prog = b.findProgram(obj, name) as bigint | null;
      if (!prog) throw new Error(`${objectPath} has no program ${name}`);
      return checkRet("bpf_program__fd", b.programFd(prog) as number, name);
    };
    const egressProgFd = progFd(PROG_EGRESS);
    const ingressProgFd = progFd(PROG_INGRESS);
    const egress = programInfo(egressProgFd);
    const ingress = programInfo(ingressProgFd);
    for (const [info, name] of [[egress, PROG_EGRESS], [ingress, PROG_INGRESS]] as const) {
      if (info.type !== BPF_PROG_TYPE_SCHED_CLS) throw new Error(`${objectPath}: ${name} is not a tc program (type ${info.type})`);
    }
    const newMaps = new Map<string, number>();
    for (const name of changedMaps) newMaps.set(name, checkRet("bpf_object__find_map_fd_by_name", b.findMapFd(obj, name) as number, name));
    if (changedMaps.length === 0 && egress.tag === previousEgressTag && ingress.tag === previousIngressTag) {
      b.closeObject(obj);
      obj = null;
      return undefined;
    }
    const loaded = obj;
    obj = null; // owned by the upgrade from here on
    let open = true;
    const closeObject = (): void => {
      if (!open) return;
      open = false;
      b.closeObject(loaded);
    };
    return {
      egressProgFd,
      ingressProgFd,
      egressTag: egress.tag,
      ingressTag: ingress.tag,
      previousEgressTag,
      previousIngressTag,
      newMaps,
      putNewSlot(mac: string, slot: SlotNat): void {
        const fd = newMaps.get(MAP_SLOTS);
        if (fd === undefined) throw new Error("the slots map kept its layout");
        checkRet("bpf_map_update_elem", b.mapUpdate(fd, encodeSlotKey(mac), encodeSlotValue(slot), BPF_ANY) as number, mac);
      },
      bindSlot(mac: string, ifindex: number): void {
        const fd = newMaps.get(MAP_SLOTS) ?? (b.findMapFd(loaded, MAP_SLOTS) as number);
        const key = encodeSlotKey(mac);
        const value = Buffer.alloc(SLOT_VALUE_SIZE);
        const ret = b.mapLookup(fd, key, value) as number;
        // A slot without an entry is not whole: its rebuild writes a bound one.
        if (ret === -libc.ENOENT) return;
        checkRet("bpf_map_lookup_elem", ret, mac);
        const current = decodeSlotValue(value);
        if (current.ifindex === ifindex) return;
        checkRet("bpf_map_update_elem", b.mapUpdate(fd, key, encodeSlotValue({ ...current, ifindex }), BPF_EXIST) as number, mac);
      },
      commit(): void {
        if (!open) throw new Error(`upgrade of ${pinDir} is already closed`);
        // Maps of a new layout replace the pinned ones (NAME-new, then rename: atomic per map).
        for (const [name, fd] of newMaps) {
          const scratch = path.join(pinDir, `${name}-new`);
          fs.rmSync(scratch, { force: true });
          checkRet("bpf_obj_pin", b.objPin(fd, scratch) as number, scratch);
          fs.renameSync(scratch, path.join(pinDir, name));
        }
        // New maps first: a pin directory is complete before any program that uses them is pinned.
        for (const name of ADDED_MAPS) {
          if (reused.has(name)) continue;
          const fd = b.findMapFd(loaded, name) as number;
          if (fd < 0) throw new Error(`${objectPath} has no map ${name}`);
          checkRet("bpf_obj_pin", b.objPin(fd, path.join(pinDir, name)) as number, name);
        }
        for (const [name, fd] of [[PROG_EGRESS, egressProgFd], [PROG_INGRESS, ingressProgFd]] as const) {
          // bpffs refuses names with a dot; a NAME-new left by a crash is stale.
          const scratch = path.join(pinDir, `${name}-new`);
          fs.rmSync(scratch, { force: true });
          checkRet("bpf_obj_pin", b.objPin(fd, scratch) as number, scratch);
          fs.renameSync(scratch, path.join(pinDir, name));
        }
        closeObject();
      },
      abandon: closeObject,
    };
  } finally {
    if (obj) b.closeObject(obj);
    for (const fd of pinned) libc.close(fd);
  }
}

export interface TestRunResult {
  /** The program's return value: TC_ACT_OK, TC_ACT_SHOT, … */
  retval: number;
  /** The frame as the program left it. */
  packet: Buffer;
  /** struct __sk_buff cb[0..4] after the run (the NAT programs leave a drop reason in cb[0]). */
  cb: number[];
  /** Average run time per repetition, nanoseconds. */
  durationNs: number;
}

/**
 * Runs a program on one frame in the kernel (BPF_PROG_TEST_RUN; `bpftool prog run`).
 * For tc programs the frame starts with its Ethernet header (at least 14 bytes).
 */
export function progTestRun(progFd: number, packet: Buffer, repeat = 1, ctx: { mark?: number } = {}): TestRunResult {
  const dataIn = Buffer.from(packet);
  const dataOut = Buffer.alloc(packet.length + 4096);
  const ctxOut = Buffer.alloc(SKB_CTX_SIZE);
  const opts = Buffer.alloc(TEST_RUN_OPTS_SIZE);
  opts.writeBigUInt64LE(BigInt(TEST_RUN_OPTS_SIZE), 0); // sz
  opts.writeBigUInt64LE(libc.addressOf(dataIn), 8); // data_in
  opts.writeBigUInt64LE(libc.addressOf(dataOut), 16); // data_out
  opts.writeUInt32LE(dataIn.length, 24); // data_size_in
  opts.writeUInt32LE(dataOut.length, 28); // data_size_out
  // struct __sk_buff in: only mark (offset 8) is set; the kernel refuses other nonzero fields it does not take.
  const ctxIn = Buffer.alloc(SKB_CTX_IN_SIZE);
  if (ctx.mark !== undefined) {
    ctxIn.writeUInt32LE(ctx.mark >>> 0, 8);
    opts.writeBigUInt64LE(libc.addressOf(ctxIn), 32); // ctx_in
    opts.writeUInt32LE(ctxIn.length, 48); // ctx_size_in
  }
  opts.writeBigUInt64LE(libc.addressOf(ctxOut), 40); // ctx_out
  opts.writeUInt32LE(ctxOut.length, 52); // ctx_size_out
  opts.writeInt32LE(repeat, 60); // repeat
  checkRet("bpf_prog_test_run_opts", b.testRun(progFd, opts) as number);
  const cb: number[] = [];
  for (let i = 0; i < 5; i++) cb.push(ctxOut.readUInt32LE(SKB_CTX_CB_OFFSET + 4 * i));
  return {
    retval: opts.readUInt32LE(56),
    packet: Buffer.from(dataOut.subarray(0, opts.readUInt32LE(28))),
    cb,
    durationNs: opts.readUInt32LE(64),
  };
}

let cpus: number | undefined;
/** Possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-3"): the length of a per-CPU map value. */
function possibleCpus(): number {
  if (cpus === undefined) {
    let n = 0;
    for (const part of fs.readFileSync("/sys/devices/system/cpu/possible", "utf8").trim().split(",")) {
      const [lo, hi] = part.split("-").map(Number) as [number, number | undefined];
      n = Math.max(n, (hi ?? lo) + 1);
    }
    cpus = n;
  }
  return cpus;
}
