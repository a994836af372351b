// Trivial eBPF programs for tests, loaded by the raw bpf(2) call (no object file, no libbpf).
import * as libc from "../../src/kernel/libc.js";

const BPF_PROG_LOAD = 5;
export const BPF_PROG_TYPE_SCHED_CLS = 3;
export const BPF_PROG_TYPE_FLOW_DISSECTOR = 22;
export const BPF_PROG_TYPE_SK_LOOKUP = 30;

/** `r0 = retval; exit` as a program of `type`; its fd. */
export function loadTrivialProgram(type: number, name: string, retval = 0, expectedAttachType = 0): number {
  const insns = Buffer.alloc(16);
  insns.writeUInt8(0xb7, 0); // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
  insns.writeInt32LE(retval, 4);
  insns.writeUInt8(0x95, 8); // BPF_JMP | BPF_EXIT
  const license = Buffer.from("GPL\0");
  const attr = Buffer.alloc(128);
  attr.writeUInt32LE(type, 0);
  attr.writeUInt32LE(2, 4); // insn_cnt
  attr.writeBigUInt64LE(libc.addressOf(insns), 8);
  attr.writeBigUInt64LE(libc.addressOf(license), 16);
  attr.write(name.slice(0, 15), 48, "ascii");
  attr.writeUInt32LE(expectedAttachType, 68);
  return libc.bpf(BPF_PROG_LOAD, attr, `bpf(BPF_PROG_LOAD) ${name}`);
}
