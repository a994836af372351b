// Traffic control actions in the namespace's action tables (`tc actions ls action KIND`):
// a standalone action (`tc actions add action mirred … index N cookie HEX`) is bound to no
// filter, so no qdisc or filter dump shows it, yet it stays in the namespace after its
// creator exits, and its cookie (up to 16 bytes, any number of actions) is readable by the
// next root in the namespace. The kernel dumps one kind at a time (~20 µs each) and has no
// list of the kinds it has: those built in are found once by asking for an action of each
// kind (EINVAL: no such kind), and a module loaded later shows in /sys/module.
import * as fs from "node:fs";
import * as libc from "../../libc.js";
import { Attrs, attrNested, attrString, attrU32, encodeMessage } from "../codec.js";
import { isNetlinkErrno, type NetlinkSocket } from "../socket.js";

const RTM_GETACTION = 50;
const TCA_ACT_TAB = 1;
const TCA_ACT_KIND = 1;
const TCA_ACT_INDEX = 3;
const TCA_ACT_COOKIE = 6;

/** Action kinds of Linux 6.x (net/sched/act_*.c). */
export const ACTION_KINDS = [
  "bpf", "connmark", "csum", "ct", "ctinfo", "gact", "gate", "ife", "mirred", "mpls", "nat",
  "pedit", "police", "sample", "simple", "skbedit", "skbmod", "tunnel_key", "vlan",
] as const;

/** struct tcamsg: family and padding. */
const TCAMSG = Buffer.alloc(4);

let builtIn: string[] | undefined;
/** Whether the kernel can load modules (else the kinds found at first are all there ever are). */
const modular = fs.existsSync("/proc/modules");

/** The action kinds this kernel has now. */
export function actionKinds(sock: NetlinkSocket): string[] {
  builtIn ??= ACTION_KINDS.filter((kind) => {
    const msg = encodeMessage(RTM_GETACTION, 0, [TCAMSG, attrNested(TCA_ACT_TAB, [attrNested(1, [attrString(TCA_ACT_KIND, kind), attrU32(TCA_ACT_INDEX, 1)])])]);
    try {
      sock.query(msg, `RTM_GETACTION ${kind}`);
      return true;
    } catch (err) {
      if (isNetlinkErrno(err, libc.ENOENT)) return true;
      if (isNetlinkErrno(err, libc.EINVAL)) return false;
      throw err;
    }
  });
  if (!modular) return builtIn;
  return ACTION_KINDS.filter((kind) => builtIn!.includes(kind) || fs.existsSync(`/sys/module/act_${kind}`));
}

/** One line per action of `kinds` in the calling thread's namespace: "mirred index 7 cookie 0123…". */
export function listActions(sock: NetlinkSocket, kinds: readonly string[] = actionKinds(sock)): string[] {
  const out: string[] = [];
  for (const kind of kinds) {
    const msg = encodeMessage(RTM_GETACTION, 0, [TCAMSG, attrNested(TCA_ACT_TAB, [attrNested(1, [attrString(TCA_ACT_KIND, kind)])])]);
    for (const m of sock.dump(msg, `RTM_GETACTION dump ${kind}`)) {
      const tab = new Attrs(m.payload, 4).nested(TCA_ACT_TAB);
      // The table's entries are nested attributes numbered 1, 2, …
      for (const a of tab?.list ?? []) {
        const act = new Attrs(a.value);
        const index = act.get(TCA_ACT_INDEX);
        const cookie = act.get(TCA_ACT_COOKIE);
        out.push(`${act.str(TCA_ACT_KIND) ?? kind}${index ? ` index ${index.readUInt32LE(0)}` : ""}${cookie ? ` cookie ${cookie.toString("hex")}` : ""}`);
      }
    }
  }
  return out;
}
