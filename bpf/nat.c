/* SPDX-License-Identifier: Apache-2.0 */
/*
 * netslot data path: stateless 1:1 NAT of the guest address and VXLAN VNI rewriting.
 * Both programs sit on the slot-side veth (eth0) of every slot, tc clsact, direct-action;
 * one loaded copy serves all slots of a daemon, the slot found by eth0's MAC and proven by
 * eth0's ifindex (unique per slot, and not settable from inside the slot, unlike the MAC).
 *
 *   nat_egress  (frames leaving the slot):   guest_addr -> outside_addr, dummy VNI -> lease VNI
 *   nat_ingress (frames entering the slot):  outside_addr -> guest_addr, lease VNI -> dummy VNI
 *
 * No per-flow state: every decision comes from the frame and the two maps.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/consts.h"
#include "lib/maps.h"
#include "lib/csum.h"
#include "lib/policy.h"
#include "lib/nat6.h"

_Static_assert(NETSLOT_VERDICT_OK == TC_ACT_OK, "verdict OK");
_Static_assert(NETSLOT_VERDICT_DROP == TC_ACT_SHOT, "verdict DROP");

char LICENSE[] SEC("license") = "Apache-2.0";

/* What the parser found; packet pointers do not survive the rewrite helpers, this does. */
struct pkt {
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__u8 proto;
	/* Offset 0 and the L4 header present: ports and checksums are readable. */
	__u8 has_l4;
	__u8 icmp_error;   /* ICMP error with a complete embedded IPv4 header */
	__u8 udp_has_csum; /* UDP checksum field nonzero */
	__be16 dport;      /* TCP/UDP */
	__be32 inner_saddr;
	__be32 inner_daddr;
	/* Offset of the quoted TCP/UDP checksum, 0 when it is not quoted or not in use. */
	__u32 inner_l4_csum_off;
	__u8 inner_is_udp;
	__u8 has_vxlan;    /* UDP to the VXLAN port with its 8-byte header present */
	__be32 vni_word;   /* VXLAN bytes 4..7: VNI << 8 | reserved, network order */
};

static __always_inline int drop(struct __sk_buff *skb, __u32 reason)
{
	skb->cb[0] = reason;
	return TC_ACT_SHOT;
}

/* Makes the headers we read linear: a no-op for the usual skb whose headers are already. */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 want = skb->len;

	if (want > NETSLOT_PULL_LEN)
		want = NETSLOT_PULL_LEN;
	if (data + want > data_end)
		bpf_skb_pull_data(skb, want);
}

/* Returns 0 for an IPv4 frame whose IP header is complete, -1 otherwise (not ours to touch). */
static __always_inline int parse(struct __sk_buff *skb, const struct nat_config *cfg, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 ihl;
	void *l4;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	ihl = ip->ihl * 4;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->l4_off = ETH_HLEN + ihl;
	/* Later fragments carry no L4 header: only the IP header is rewritten. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;

	l4 = (void *)ip + ihl;
	switch (p->proto) {
	case IPPROTO_TCP:
		if (l4 + TCP_OFF_CHECK + 2 > data_end)
			return 0;
		p->dport = *(__be16 *)(l4 + 2);
		p->has_l4 = 1;
		return 0;
	case IPPROTO_UDP: {
		__u8 *vx;

		if (l4 + 8 > data_end)
			return 0;
		p->dport = *(__be16 *)(l4 + 2);
		p->udp_has_csum = *(__u16 *)(l4 + UDP_OFF_CHECK) != 0;
		p->has_l4 = 1;
		if (p->dport != bpf_htons(cfg->vxlan_port))
			return 0;
		vx = l4 + 8;
		if ((void *)(vx + NETSLOT_VXLAN_HLEN) > data_end)
			return 0;
		p->vni_word = *(__be32 *)(vx + VXLAN_OFF_VNI);
		p->has_vxlan = 1;
		return 0;
	}
	case IPPROTO_ICMP: {
		__u8 type;
		struct iphdr *inner;

		if (l4 + ICMP_HLEN > data_end)
			return 0;
		p->has_l4 = 1;
		type = *(__u8 *)l4;
		if (type != ICMP_T_DEST_UNREACH && type != ICMP_T_SOURCE_QUENCH &&
		    type != ICMP_T_REDIRECT && type != ICMP_T_TIME_EXCEEDED &&
		    type != ICMP_T_PARAMETERPROB)
			return 0;
		inner = l4 + ICMP_HLEN;
		if ((void *)(inner + 1) > data_end)
			return 0;
		if (inner->version != 4)
			return 0;
		p->inner_saddr = inner->saddr;
		p->inner_daddr = inner->daddr;
		p->icmp_error = 1;
		/*
		 * The quoted TCP/UDP checksum covers the quoted addresses (pseudo-header): when
		 * the quote reaches it, it must follow the address rewrite too. First fragments only.
		 */
		if (inner->frag_off & bpf_htons(0x1fff))
			return 0;
		{
			__u32 ihl = inner->ihl * 4;
			void *inner_l4 = (void *)inner + ihl;

			if (ihl < 20 || ihl > 60)
				return 0;
			if (inner->protocol == IPPROTO_TCP && inner_l4 + 18 <= data_end) {
				p->inner_l4_csum_off = p->l4_off + ICMP_HLEN + ihl + 16;
			} else if (inner->protocol == IPPROTO_UDP && inner_l4 + 8 <= data_end &&
				   *(__u16 *)(inner_l4 + 6) != 0) {
				p->inner_l4_csum_off = p->l4_off + ICMP_HLEN + ihl + 6;
				p->inner_is_udp = 1;
			}
		}
		return 0;
	}
	default:
		return 0;
	}
}

/* The checksum that covers the addresses through the pseudo-header, if the frame has one. */
static __always_inline enum l4_csum_kind l4_kind(const struct pkt *p, __u32 *csum_off)
{
	if (!p->has_l4)
		return L4_CSUM_NONE;
	if (p->proto == IPPROTO_TCP) {
		*csum_off = p->l4_off + TCP_OFF_CHECK;
		return L4_CSUM_TCP;
	}
	if (p->proto == IPPROTO_UDP && p->udp_has_csum) {
		*csum_off = p->l4_off + UDP_OFF_CHECK;
		return L4_CSUM_UDP;
	}
	return L4_CSUM_NONE;
}

static __always_inline __u32 vni_of(__be32 vni_word)
{
	return bpf_ntohl(vni_word) >> 8;
}

static __always_inline __be32 with_vni(__be32 vni_word, __u32 vni)
{
	return bpf_htonl((vni << 8) | (bpf_ntohl(vni_word) & 0xff));
}

/* Shared prologue: the slot this frame belongs to (by `mac`), the config, the parsed headers. */
static __always_inline int lookup(struct __sk_buff *skb, int by_source, struct slot_value **slot,
				  struct nat_config **cfg, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct slot_key key = {};
	__u32 zero = 0;

#ifdef NETSLOT_UPGRADE_TEST
	/* Test builds only: one harmless extra instruction, so both programs get a new tag. */
	asm volatile("r0 = 0" ::: "r0");
#endif
	if ((void *)(eth + 1) > data_end)
		return -1;
	if (by_source)
		__builtin_memcpy(key.mac, eth->h_source, ETH_ALEN);
	else
		__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	*slot = bpf_map_lookup_elem(&slots, &key);
	/*
	 * An IPv4 frame of no slot, or whose MAC is another slot's (a tenant changed eth0's
	 * MAC), cannot be attributed: dropped and counted, never passed untranslated.
	 */
	if (!*slot || (*slot)->ifindex != skb->ifindex) {
		__u64 *n = bpf_map_lookup_elem(&unattributed, &zero);

		if (n)
			*n += 1;
		return -2;
	}
	*cfg = bpf_map_lookup_elem(&config, &zero);
	/* An unconfigured array entry is all zeroes: nothing to match yet. */
	if (!*cfg || (*cfg)->guest_addr == 0)
		return -1;
	pull_headers(skb);
	return parse(skb, *cfg, p);
}

/*
 * The lease's bandwidth: spends the frame's IP bytes from its direction's token bucket.
 * Policing, not shaping: this kernel has no fq qdisc to honour an earliest departure time
 * (skb->tstamp), so a frame over the rate is dropped and TCP backs off. Returns -1 to drop.
 */
static __always_inline int police(struct __sk_buff *skb, __be32 outside, int ingress)
{
	struct rate_value *r = bpf_map_lookup_elem(&rates, &outside);
	struct rate_bucket *b;
	__u64 now, elapsed, tokens, len;
	int ok = 1;

	if (!r)
		return 0;
	b = ingress ? &r->ingress : &r->egress;
	/* Written by the daemon before the lease is handed out, not by the programs. */
	if (b->rate == 0)
		return 0;
	len = skb->len > ETH_HLEN ? skb->len - ETH_HLEN : 0;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&r->lock);
	elapsed = now - b->last_ns;
	/* A full bucket after a second of silence; also the first frame (last_ns 0). */
	if (elapsed > NETSLOT_NSEC_PER_SEC)
		elapsed = NETSLOT_NSEC_PER_SEC;
	tokens = b->tokens + elapsed * b->rate / NETSLOT_NSEC_PER_SEC;
	if (tokens > b->burst)
		tokens = b->burst;
	b->last_ns = now;
	if (tokens >= len)
		tokens -= len;
	else
		ok = 0;
	b->tokens = tokens;
	bpf_spin_unlock(&r->lock);
	return ok ? 0 : -1;
}

/* Rewrites the outer IPv4 address at `addr_field` (IP_OFF_SADDR/DADDR), with the L4 checksum. */
static __always_inline int rewrite_outer(struct __sk_buff *skb, const struct pkt *p, __u32 addr_field,
					 __be32 from, __be32 to)
{
	__u32 csum_off = 0;
	enum l4_csum_kind kind = l4_kind(p, &csum_off);

	return rewrite_ipv4_addr(skb, ETH_HLEN, addr_field, from, to, kind, csum_off);
}

/* Rewrites the address an ICMP error quotes, with the ICMP and quoted L4 checksums. */
static __always_inline int rewrite_quoted(struct __sk_buff *skb, const struct pkt *p, __u32 addr_field,
					  __be32 from, __be32 to)
{
	return rewrite_icmp_inner_addr(skb, p->l4_off + ICMP_HLEN, addr_field, from, to,
				       p->l4_off + ICMP_OFF_CHECK, p->inner_l4_csum_off,
				       p->inner_is_udp);
}

/*
 * VXLAN of the slot's own device: passes anything else, drops a frame of no tenant or
 * whose VNI is not `expect` (with `mismatch` as the reason), else swaps the VNI to `to`.
 */
static __always_inline int swap_vni(struct __sk_buff *skb, const struct pkt *p,
				    const struct nat_config *cfg, const struct slot_value *slot,
				    __u32 expect, __u32 mismatch, __u32 to)
{
	if (p->proto != IPPROTO_UDP || !p->has_l4 || p->dport != bpf_htons(cfg->vxlan_port))
		return TC_ACT_OK;
	if (!p->has_vxlan)
		return drop(skb, NETSLOT_DROP_VXLAN_TRUNCATED);
	if (slot->vni == 0)
		return drop(skb, NETSLOT_DROP_NO_TENANT);
	if (vni_of(p->vni_word) != expect)
		return drop(skb, mismatch);
	if (rewrite_vxlan_vni(skb, p->l4_off + 8 + VXLAN_OFF_VNI, p->vni_word,
			      with_vni(p->vni_word, to), p->udp_has_csum,
			      p->l4_off + UDP_OFF_CHECK) < 0)
		return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
	return TC_ACT_OK;
}

/* ---- IPv6 (bpf/lib/nat6.h): the 1:1 translation of a lease with IPv6 ------------------- */

static __always_inline int is_ipv6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	return (void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IPV6);
}

/*
 * A lease's egress policy for IPv6: its CIDR lists are IPv4, so under an allow-list (the
 * RESTRICTED flag) only what DNS answers admitted passes (the slot's nftables marks it),
 * and a deny-only policy leaves IPv6 alone.
 */
static __always_inline int egress_policy6(struct __sk_buff *skb, __be32 outside4)
{
	struct slot_policy *pol = bpf_map_lookup_elem(&policies, &outside4);

	if (!pol || !(pol->flags & NETSLOT_POLICY_RESTRICTED))
		return 0;
	return skb->mark == NETSLOT_ADMITTED_MARK ? 0 : -1;
}

/* Out of the slot: guest address -> outside address; nothing else leaves (bar veth ND). */
static __always_inline int nat6_egress(struct __sk_buff *skb)
{
	struct slot6_value *v;
	struct pkt6 p = {};
	__u8 outside[16];

	if (parse6(skb, &p) < 0)
		return drop(skb, NETSLOT_DROP_IPV6_REFUSED);
	if (is_veth_nd(&p))
		return TC_ACT_OK;
	v = slot6_of(skb);
	if (!v)
		return drop(skb, NETSLOT_DROP_IPV6_OFF);
	if (!addr6_eq(p.saddr, v->guest))
		return drop(skb, NETSLOT_DROP_IPV6_REFUSED);
	__builtin_memcpy(outside, v->outside, 16);
	if (police(skb, v->outside4, 0) < 0)
		return drop(skb, NETSLOT_DROP_RATE);
	if (egress_policy6(skb, v->outside4) < 0)
		return drop(skb, NETSLOT_DROP_POLICY);
	if (rewrite6(skb, &p, ETH_HLEN + IP6_OFF_SADDR, p.saddr, outside) < 0)
		return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
	return TC_ACT_OK;
}

/* Into the slot: outside address -> guest address; nothing else enters (bar veth ND). */
static __always_inline int nat6_ingress(struct __sk_buff *skb)
{
	struct slot6_value *v;
	struct pkt6 p = {};
	__u8 guest[16];

	if (parse6(skb, &p) < 0)
		return drop(skb, NETSLOT_DROP_IPV6_REFUSED);
	if (is_veth_nd(&p))
		return TC_ACT_OK;
	v = slot6_of(skb);
	if (!v)
		return drop(skb, NETSLOT_DROP_IPV6_OFF);
	if (!addr6_eq(p.daddr, v->outside))
		return drop(skb, NETSLOT_DROP_IPV6_REFUSED);
	__builtin_memcpy(guest, v->guest, 16);
	if (police(skb, v->outside4, 1) < 0)
		return drop(skb, NETSLOT_DROP_RATE);
	if (rewrite6(skb, &p, ETH_HLEN + IP6_OFF_DADDR, p.daddr, guest) < 0)
		return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
	return TC_ACT_OK;
}

/* ---- the programs ---------------------------------------------------------------------- */

SEC("tc")
int nat_egress(struct __sk_buff *skb)
{
	struct slot_value *slot;
	struct nat_config *cfg;
	struct pkt p = {};
	__be32 guest, outside;

	if (is_ipv6(skb))
		return nat6_egress(skb);
	switch (lookup(skb, 1, &slot, &cfg, &p)) {
	case -2:
		return drop(skb, NETSLOT_DROP_UNATTRIBUTED);
	case -1:
		return TC_ACT_OK;
	}
	guest = cfg->guest_addr;
	outside = slot->outside_addr;
	/* Judged before the bucket: a forbidden frame spends none of the lease's bandwidth. */
	if (p.saddr == guest && egress_policy(skb, outside, p.daddr) < 0)
		return drop(skb, NETSLOT_DROP_POLICY);
	if (police(skb, outside, 0) < 0)
		return drop(skb, NETSLOT_DROP_RATE);

	if (p.saddr == guest && rewrite_outer(skb, &p, IP_OFF_SADDR, guest, outside) < 0)
		return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
	/*
	 * An ICMP error from the slot quotes a packet the guest received: its destination is
	 * the guest. Rewritten whoever sent the error (the guest, or the slot's own stack
	 * when the guest is unreachable), so the far end can match it to its flow.
	 */
	if (p.icmp_error && p.inner_daddr == guest) {
		if (rewrite_quoted(skb, &p, IP_OFF_DADDR, guest, outside) < 0)
			return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
		return TC_ACT_OK;
	}
	if (p.saddr == guest)
		return TC_ACT_OK;

	/* VXLAN from the slot's own device (the guest's frames were handled above). */
	return swap_vni(skb, &p, cfg, slot, cfg->dummy_vni, NETSLOT_DROP_VNI_NOT_DUMMY, slot->vni);
}

SEC("tc")
int nat_ingress(struct __sk_buff *skb)
{
	struct slot_value *slot;
	struct nat_config *cfg;
	struct pkt p = {};
	__be32 guest, outside;

	if (is_ipv6(skb))
		return nat6_ingress(skb);
	switch (lookup(skb, 0, &slot, &cfg, &p)) {
	case -2:
		return drop(skb, NETSLOT_DROP_UNATTRIBUTED);
	case -1:
		return TC_ACT_OK;
	}
	guest = cfg->guest_addr;
	outside = slot->outside_addr;
	if (police(skb, outside, 1) < 0)
		return drop(skb, NETSLOT_DROP_RATE);

	if (p.daddr == outside) {
		if (rewrite_outer(skb, &p, IP_OFF_DADDR, outside, guest) < 0)
			return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
		/* An ICMP error about a packet the guest sent quotes it with the outside source. */
		if (p.icmp_error && p.inner_saddr == outside &&
		    rewrite_quoted(skb, &p, IP_OFF_SADDR, outside, guest) < 0)
			return drop(skb, NETSLOT_DROP_REWRITE_FAILED);
		return TC_ACT_OK;
	}

	/* VXLAN to the slot's own address: only the lease's VNI may reach the slot's device. */
	return swap_vni(skb, &p, cfg, slot, slot->vni, NETSLOT_DROP_VNI_MISMATCH, cfg->dummy_vni);
}
