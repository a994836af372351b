/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A lease's egress policy (network profiles, egress.allow / egress.deny), judged on the
 * guest's frames leaving the slot. Every profile's CIDRs sit in ONE longest-prefix-match
 * trie shared by all slots, keyed by (profile id, prefix) and written once when the daemon
 * starts; a lease's slot gets a `policies` entry naming its profile. Applying a profile
 * at request time is that one map update, whatever the size of its lists.
 *
 * Addresses admitted by DNS answers (egress.allowDomains) stay in the slot's nftables
 * set, whose forward rule marks the guest's frames to them with NETSLOT_ADMITTED_MARK
 * before they reach eth0: a restricted policy lets such a frame pass.
 * src/kernel/bpfmaps.ts encodes the same layouts.
 */
#ifndef NETSLOT_POLICY_H
#define NETSLOT_POLICY_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Entries of the shared trie: all profiles' allow and deny CIDRs (at most 1,024 + 1,024 each). */
#define NETSLOT_MAX_POLICY_CIDRS 262144
/* skb->mark the slot's nftables forward chain puts on frames to admitted addresses. */
#define NETSLOT_ADMITTED_MARK 0x6e730001
/* policy_cidr values: the verdict of the longest matching prefix. */
#define NETSLOT_POLICY_ALLOW 1
#define NETSLOT_POLICY_DENY 2
/* slot_policy flags: only allowed (or admitted) destinations; else all but denied ones. */
#define NETSLOT_POLICY_RESTRICTED 1

/* struct bpf_lpm_trie_key layout: prefixlen counts the bits of (profile, addr) matched. */
struct policy_cidr_key {
	__u32 prefixlen; /* 32 (the profile id, always whole) + the CIDR's prefix length */
	__u32 profile;   /* network order, like the address: the trie matches bytes */
	__be32 addr;
};

struct slot_policy {
	__u32 profile;     /* host order; the key prefix in policy_cidrs */
	__be32 host_addr;  /* the slot's host link address: answers to the host and guest.dns always pass */
	__u32 flags;       /* NETSLOT_POLICY_RESTRICTED */
};

_Static_assert(sizeof(struct policy_cidr_key) == 12, "policy_cidr_key layout");
_Static_assert(sizeof(struct slot_policy) == 12, "slot_policy layout");

/*
 * (profile, prefix) -> verdict. The daemon marks an allow CIDR that lies inside a deny
 * CIDR as a deny, so the longest match alone gives "deny wins over allow".
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NETSLOT_MAX_POLICY_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_cidr_key);
	__type(value, __u32);
} policy_cidrs SEC(".maps");

/* Keyed by the slot's outside address (network order): an entry only while a lease has a policy. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETSLOT_MAX_SLOTS);
	__type(key, __be32);
	__type(value, struct slot_policy);
} policies SEC(".maps");

/* Returns -1 when the policy of the slot with address `outside` forbids the guest's frame to `daddr`. */
static __always_inline int egress_policy(struct __sk_buff *skb, __be32 outside, __be32 daddr)
{
	struct slot_policy *pol = bpf_map_lookup_elem(&policies, &outside);
	struct policy_cidr_key key;
	__u32 *verdict;

	if (!pol)
		return 0;
	if (daddr == pol->host_addr)
		return 0;
	key.prefixlen = 64;
	key.profile = bpf_htonl(pol->profile);
	key.addr = daddr;
	verdict = bpf_map_lookup_elem(&policy_cidrs, &key);
	if (verdict)
		return *verdict == NETSLOT_POLICY_ALLOW ? 0 : -1;
	if (!(pol->flags & NETSLOT_POLICY_RESTRICTED))
		return 0;
	return skb->mark == NETSLOT_ADMITTED_MARK ? 0 : -1;
}

#endif
