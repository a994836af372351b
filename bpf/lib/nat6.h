/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IPv6 for leases whose profile has `ipv6: true`: a stateless 1:1 translation of the
 * guest's fixed IPv6 address to the slot's outside IPv6 address (from --link-cidr6), on
 * the same eth0 hooks as the IPv4 NAT. Kept apart from the IPv4 code: nat.c calls
 * nat6_egress/nat6_ingress for every IPv6 frame and nothing else.
 *
 * The entry is keyed by eth0's ifindex itself, which the daemon chose at creation and a
 * tenant cannot change (no MAC involved): a frame is the slot's only if it is on that
 * device. An IPv6 frame on an eth0 without an entry (the lease has no IPv6) is dropped.
 *
 * What passes, rewritten: TCP, UDP and ICMPv6 (directly after the IPv6 header, or after
 * one fragment header), from the guest address out and to the outside address in, with
 * the pseudo-header part of their checksum fixed. What passes untouched: neighbour
 * discovery between eth0 and the host end of the veth (both link-local: the routes
 * between them need an IPv6 next hop). Everything else is dropped.
 */
#ifndef NETSLOT_NAT6_H
#define NETSLOT_NAT6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"

struct slot6_value {
	__u8 outside[16]; /* the slot's outside IPv6 address */
	__u8 guest[16];   /* the guest's fixed IPv6 address */
	__be32 outside4;  /* the slot's outside IPv4 address: the `rates` key (one bandwidth for both families) */
	__u32 pad;
};

_Static_assert(sizeof(struct slot6_value) == 40, "slot6_value layout");

/* eth0's ifindex (host order) -> the lease's IPv6 translation: an entry only while a lease has IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETSLOT_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct slot6_value);
} slots6 SEC(".maps");

#define IP6_HLEN 40
#define IP6_OFF_NEXTHDR 6
#define IP6_OFF_SADDR 8
#define IP6_OFF_DADDR 24
#define IP6_NH_FRAGMENT 44
#define IP6_NH_ICMPV6 58
#define ICMP6_NS 135
#define ICMP6_NA 136

/* What nat6 needs to know about a frame, copied out of it (helpers invalidate packet pointers). */
struct pkt6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 proto;      /* upper-layer protocol, after at most one fragment header */
	__u8 has_csum;   /* a checksum covering the addresses is present at csum_off */
	__u8 is_udp;
	__u8 icmp_type;
	__u32 csum_off;
};

static __always_inline int addr6_eq(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline int is_link_local6(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static __always_inline int is_unspecified6(const __u8 *a)
{
	const __u64 *x = (const __u64 *)a;

	return x[0] == 0 && x[1] == 0;
}

/* Returns 0 when the frame is one nat6 can handle, -1 when it must be dropped. */
static __always_inline int parse6(struct __sk_buff *skb, struct pkt6 *p)
{
	void *data, *data_end;
	__u8 *ip, *l4;
	__u32 l4_off = ETH_HLEN + IP6_HLEN;
	__u8 nh;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + IP6_HLEN + 8 > data_end) {
		bpf_skb_pull_data(skb, ETH_HLEN + IP6_HLEN + 8 + 8);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	ip = data + ETH_HLEN;
	if ((void *)(ip + IP6_HLEN) > data_end)
		return -1;
	if ((ip[0] >> 4) != 6)
		return -1;
	__builtin_memcpy(p->saddr, ip + IP6_OFF_SADDR, 16);
	__builtin_memcpy(p->daddr, ip + IP6_OFF_DADDR, 16);
	nh = ip[IP6_OFF_NEXTHDR];
	l4 = ip + IP6_HLEN;
	if (nh == IP6_NH_FRAGMENT) {
		__u16 frag;

		if ((void *)(l4 + 8) > data_end)
			return -1;
		nh = l4[0];
		frag = bpf_ntohs(*(__be16 *)(l4 + 2)) & 0xfff8;
		l4 += 8;
		l4_off += 8;
		/* A later fragment carries no upper-layer header: only the address changes. */
		if (frag != 0) {
			p->proto = nh;
			return (nh == IPPROTO_TCP || nh == IPPROTO_UDP || nh == IP6_NH_ICMPV6) ? 0 : -1;
		}
	}
	p->proto = nh;
	switch (nh) {
	case IPPROTO_TCP:
		if ((void *)(l4 + TCP_OFF_CHECK + 2) > data_end)
			return -1;
		p->csum_off = l4_off + TCP_OFF_CHECK;
		p->has_csum = 1;
		return 0;
	case IPPROTO_UDP:
		if ((void *)(l4 + 8) > data_end)
			return -1;
		p->csum_off = l4_off + UDP_OFF_CHECK;
		p->is_udp = 1;
		/* Zero is not a valid IPv6 UDP checksum (the receiver drops it): nothing to keep right. */
		p->has_csum = *(__u16 *)(l4 + UDP_OFF_CHECK) != 0;
		return 0;
	case IP6_NH_ICMPV6:
		if ((void *)(l4 + 4) > data_end)
			return -1;
		p->icmp_type = l4[0];
		p->csum_off = l4_off + ICMP_OFF_CHECK;
		p->has_csum = 1;
		return 0;
	default:
		/* Extension headers could hide a checksum that covers the address: not passed. */
		return -1;
	}
}

/* Neighbour discovery between eth0 and the host end of its veth: link-local, passed as is. */
static __always_inline int is_veth_nd(const struct pkt6 *p)
{
	if (p->proto != IP6_NH_ICMPV6 || (p->icmp_type != ICMP6_NS && p->icmp_type != ICMP6_NA))
		return 0;
	if (!is_link_local6(p->saddr) && !is_unspecified6(p->saddr))
		return 0;
	return is_link_local6(p->daddr) || p->daddr[0] == 0xff;
}

/* Replaces the 16-byte address at `addr_off` by `to`, fixing the upper-layer checksum's pseudo-header part. */
static __always_inline int rewrite6(struct __sk_buff *skb, const struct pkt6 *p, __u32 addr_off,
				    const __u8 *from, const __u8 *to)
{
	if (p->has_csum) {
		__s64 diff = bpf_csum_diff((__be32 *)from, 16, (__be32 *)to, 16, 0);
		/* Size 0: `to` is a checksum difference. BPF_F_IPV6: no IPv4 header sum to keep. */
		__u64 flags = BPF_F_PSEUDO_HDR | BPF_F_IPV6;

		if (diff < 0)
			return -1;
		if (p->is_udp)
			flags |= BPF_F_MARK_MANGLED_0;
		if (bpf_l4_csum_replace(skb, p->csum_off, 0, (__u32)diff, flags) < 0)
			return -1;
	}
	if (bpf_skb_store_bytes(skb, addr_off, to, 16, 0) < 0)
		return -1;
	return 0;
}

/* The lease's IPv6 entry for this eth0, or NULL. */
static __always_inline struct slot6_value *slot6_of(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;

	return bpf_map_lookup_elem(&slots6, &ifindex);
}

#endif
