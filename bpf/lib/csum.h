/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checksum-preserving rewrites. Each helper fixes the checksums first and writes the new
 * bytes last, through the kernel helpers, which also keep skb->csum (CHECKSUM_COMPLETE)
 * and partial checksums (CHECKSUM_PARTIAL, offloaded TCP/UDP) right. All offsets are
 * from the start of the frame and even, as the 16-bit checksum arithmetic requires.
 * Helpers invalidate packet pointers: callers work with offsets and copied values.
 */
#ifndef NETSLOT_CSUM_H
#define NETSLOT_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"

/* Which L4 checksum covers an address through the pseudo-header. */
enum l4_csum_kind {
	L4_CSUM_NONE = 0, /* ICMP, fragments without the L4 header, UDP without checksum */
	L4_CSUM_TCP = 1,
	L4_CSUM_UDP = 2,
};

/*
 * Replaces the IPv4 address at ip_off + addr_field (IP_OFF_SADDR or IP_OFF_DADDR) by `to`,
 * fixing that header's checksum and, for TCP/UDP, the pseudo-header part of the L4
 * checksum at l4_csum_off.
 */
static __always_inline int rewrite_ipv4_addr(struct __sk_buff *skb, __u32 ip_off, __u32 addr_field,
					     __be32 from, __be32 to, enum l4_csum_kind kind,
					     __u32 l4_csum_off)
{
	if (kind != L4_CSUM_NONE) {
		__u64 flags = BPF_F_PSEUDO_HDR | sizeof(to);
		/* A UDP checksum that computes to 0 must be sent as 0xffff: 0 means "none". */
		if (kind == L4_CSUM_UDP)
			flags |= BPF_F_MARK_MANGLED_0;
		if (bpf_l4_csum_replace(skb, l4_csum_off, from, to, flags) < 0)
			return -1;
	}
	if (bpf_l3_csum_replace(skb, ip_off + IP_OFF_CHECK, from, to, sizeof(to)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off + addr_field, &to, sizeof(to), 0) < 0)
		return -1;
	return 0;
}

/*
 * Rewrites an address of the IPv4 header embedded in an ICMP error at inner_off: the
 * inner header checksum is fixed, then the ICMP checksum (at icmp_csum_off, no
 * pseudo-header) for both changed words: the address and the inner checksum.
 */
static __always_inline int rewrite_icmp_inner_addr(struct __sk_buff *skb, __u32 inner_off,
						   __u32 addr_field, __be32 from, __be32 to,
						   __u32 icmp_csum_off, __u32 inner_l4_csum_off,
						   __u8 inner_is_udp)
{
	__u16 old_check, new_check;
	__u16 old_l4, new_l4;
	__be32 f = from, t = to;
	__s64 diff;
	__u32 sum;

	if (bpf_skb_load_bytes(skb, inner_off + IP_OFF_CHECK, &old_check, sizeof(old_check)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, inner_off + IP_OFF_CHECK, from, to, sizeof(to)) < 0)
		return -1;
	if (bpf_skb_load_bytes(skb, inner_off + IP_OFF_CHECK, &new_check, sizeof(new_check)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, inner_off + addr_field, &to, sizeof(to), 0) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, icmp_csum_off, from, to, sizeof(to)) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, icmp_csum_off, old_check, new_check, sizeof(new_check)) < 0)
		return -1;
	if (!inner_l4_csum_off)
		return 0;
	/* The quoted TCP/UDP checksum: incremental update for the address, then into ICMP's. */
	if (bpf_skb_load_bytes(skb, inner_l4_csum_off, &old_l4, sizeof(old_l4)) < 0)
		return -1;
	diff = bpf_csum_diff(&f, sizeof(f), &t, sizeof(t), (__u16)~old_l4);
	if (diff < 0)
		return -1;
	sum = (__u32)diff;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	new_l4 = (__u16)~sum;
	if (inner_is_udp && new_l4 == 0)
		new_l4 = 0xffff;
	if (bpf_skb_store_bytes(skb, inner_l4_csum_off, &new_l4, sizeof(new_l4), 0) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, icmp_csum_off, old_l4, new_l4, sizeof(new_l4)) < 0)
		return -1;
	return 0;
}

/*
 * Replaces the 32-bit VNI word of a VXLAN header (VNI << 8 | reserved byte, network
 * order). With a UDP checksum the checksum absorbs the change (no pseudo-header part), so
 * the frame's sum is unchanged. Without one, the frame's sum does change: let
 * bpf_skb_store_bytes fix skb->csum for CHECKSUM_COMPLETE receivers (vxlan pulls its
 * header with that sum).
 */
static __always_inline int rewrite_vxlan_vni(struct __sk_buff *skb, __u32 vni_off, __be32 from,
					     __be32 to, int has_udp_csum, __u32 udp_csum_off)
{
	if (has_udp_csum) {
		if (bpf_l4_csum_replace(skb, udp_csum_off, from, to,
					BPF_F_MARK_MANGLED_0 | sizeof(to)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, vni_off, &to, sizeof(to), 0) < 0)
			return -1;
		return 0;
	}
	if (bpf_skb_store_bytes(skb, vni_off, &to, sizeof(to), BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	return 0;
}

#endif
