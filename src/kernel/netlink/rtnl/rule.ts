// Policy routing rules: `ip rule`.
import * as libc from "../../libc.js";
import { attrIp, attrString, attrU32, encodeMessage } from "../codec.js";
import { type NetlinkSocket } from "../socket.js";
import { RTM_DELRULE, RTM_GETRULE, FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK, FRA_OIFNAME } from "./consts.js";
import { familyHeader, decodeFibRuleHdr, af, fromAf, parsePrefix, type FibRuleHdr } from "./headers.js";

export interface RoutingRule {
  family: 4 | 6;
  priority: number;
  table: number;
  /** FR_ACT_*. */
  action: number;
  src?: string;
  dst?: string;
  iifname?: string;
  oifname?: string;
  fwmark?: number;
  fwmask?: number;
}

/** `ip [-6] rule show` */
export function rules(sock: NetlinkSocket, family: 4 | 6): RoutingRule[] {
  const out: RoutingRule[] = [];
  for (const m of dumpRules(sock, af(family))) {
    const fam = fromAf(m.family);
    if (fam === undefined) continue;
    const a = m.attrs;
    const rule: RoutingRule = {
      family: fam,
      priority: a.u32(FRA_PRIORITY) ?? 0,
      table: a.u32(FRA_TABLE) ?? m.table,
      action: m.action,
    };
    const { dstLen, srcLen } = m;
    const src = a.ip(FRA_SRC);
    const dst = a.ip(FRA_DST);
    if (src !== undefined) rule.src = `${src}/${srcLen}`;
    if (dst !== undefined) rule.dst = `${dst}/${dstLen}`;
    const iif = a.str(FRA_IIFNAME);
    const oif = a.str(FRA_OIFNAME);
    if (iif !== undefined) rule.iifname = iif;
    if (oif !== undefined) rule.oifname = oif;
    const mark = a.u32(FRA_FWMARK);
    const mask = a.u32(FRA_FWMASK);
    if (mark !== undefined) rule.fwmark = mark;
    if (mask !== undefined) rule.fwmask = mask;
    out.push(rule);
  }
  return out;
}

/** The rules of address family `family` (AF_*), decoded. */
export function dumpRules(sock: NetlinkSocket, family: number): FibRuleHdr[] {
  return sock.dump(encodeMessage(RTM_GETRULE, 0, [familyHeader(family, 12)]), "RTM_GETRULE dump").map(decodeFibRuleHdr);
}

/** `ip rule del priority P [from SRC] [to DST] [iif I] [oif O] [fwmark M/K] lookup T`; missing is success. */
export function deleteRule(sock: NetlinkSocket, rule: RoutingRule): void {
  const h = Buffer.alloc(12);
  const src = rule.src ? parsePrefix(rule.src, rule.family) : undefined;
  const dst = rule.dst ? parsePrefix(rule.dst, rule.family) : undefined;
  h.writeUInt8(af(rule.family), 0);
  h.writeUInt8(dst?.len ?? 0, 1);
  h.writeUInt8(src?.len ?? 0, 2);
  h.writeUInt8(rule.table < 256 ? rule.table : 0, 4);
  h.writeUInt8(rule.action, 7);
  const attrs: Buffer[] = [attrU32(FRA_PRIORITY, rule.priority), attrU32(FRA_TABLE, rule.table)];
  if (src?.addr !== undefined) attrs.push(attrIp(FRA_SRC, src.addr));
  if (dst?.addr !== undefined) attrs.push(attrIp(FRA_DST, dst.addr));
  if (rule.iifname !== undefined) attrs.push(attrString(FRA_IIFNAME, rule.iifname));
  if (rule.oifname !== undefined) attrs.push(attrString(FRA_OIFNAME, rule.oifname));
  if (rule.fwmark !== undefined) attrs.push(attrU32(FRA_FWMARK, rule.fwmark));
  if (rule.fwmask !== undefined) attrs.push(attrU32(FRA_FWMASK, rule.fwmask));
  sock.request(encodeMessage(RTM_DELRULE, 0, [h, ...attrs]), `RTM_DELRULE priority ${rule.priority}`, [libc.ENOENT]);
}
