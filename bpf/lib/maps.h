/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map layouts and definitions. The loader (src/kernel/bpf.ts) pins these maps itself, so
 * no LIBBPF_PIN_BY_NAME here; src/kernel/bpfmaps.ts encodes the same byte layouts.
 */
#ifndef NETSLOT_MAPS_H
#define NETSLOT_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"

/* eth0's MAC inside the slot: unique per slot, unlike ifindexes, which repeat per netns. */
struct slot_key {
	__u8 mac[6];
	__u16 pad; /* always 0 */
};

struct slot_value {
	__be32 outside_addr; /* network order */
	__u32 vni;           /* host order; 0 = the lease has no tenant network */
	/*
	 * eth0's ifindex in the slot's namespace, which the daemon chose at creation and which
	 * differs between slots: the programs only pass a frame whose skb->ifindex matches, so
	 * a tenant that takes another slot's MAC cannot take its address or VNI with it.
	 */
	__u32 ifindex;
};

struct nat_config {
	__be32 guest_addr;  /* network order: 169.254.0.21 */
	__u16 vxlan_port;   /* host order */
	__u16 pad;
	__u32 dummy_vni;    /* host order: the VNI every slot's vx0 is created with */
};

/*
 * A lease's bandwidth in one direction, as a token bucket of IP bytes (Ethernet header
 * not counted). rate 0 = unlimited. The daemon writes rate, burst and tokens = burst with
 * last_ns = 0; the programs refill and spend under the entry's lock.
 */
struct rate_bucket {
	__u64 rate;    /* bytes per second */
	__u64 burst;   /* bucket size, bytes */
	__u64 tokens;  /* bytes available, <= burst */
	__u64 last_ns; /* bpf_ktime_get_ns() of the last refill; 0 = never */
};

struct rate_value {
	struct bpf_spin_lock lock;
	__u32 pad;
	struct rate_bucket egress;  /* frames leaving the slot (the guest's uploads) */
	struct rate_bucket ingress; /* frames entering the slot (the guest's downloads) */
};

_Static_assert(sizeof(struct rate_value) == 72, "rate_value layout");
_Static_assert(sizeof(struct slot_key) == 8, "slot_key layout");
_Static_assert(sizeof(struct slot_value) == 12, "slot_value layout");
_Static_assert(sizeof(struct nat_config) == 12, "nat_config layout");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETSLOT_MAX_SLOTS);
	__type(key, struct slot_key);
	__type(value, struct slot_value);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat_config);
} config SEC(".maps");

/* Keyed by the slot's outside address (network order): an entry only while a lease has a bandwidth. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETSLOT_MAX_SLOTS);
	__type(key, __be32);
	__type(value, struct rate_value);
} rates SEC(".maps");

/* IPv4 frames dropped because no slot owns them (unknown MAC, or a MAC on another slot's eth0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unattributed SEC(".maps");

#endif
