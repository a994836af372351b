/* SPDX-License-Identifier: Apache-2.0 */
/* Constants shared by the NAT programs. Mirrored in src/kernel/bpfmaps.ts: change both. */
#ifndef NETSLOT_CONSTS_H
#define NETSLOT_CONSTS_H

#include <linux/types.h>

/* Entries of the `slots` map: one per slot of a daemon (architecture allows 16,384 per /16). */
#ifndef NETSLOT_MAX_SLOTS
#define NETSLOT_MAX_SLOTS 65536
#endif

#define NETSLOT_VXLAN_PORT_DEFAULT 4789
#define NETSLOT_VXLAN_HLEN 8
/* VXLAN "I" flag: the VNI field is valid (RFC 7348). */
#define NETSLOT_VXLAN_FLAG_I 0x08

/*
 * Verdicts the programs return (tc direct-action, linux/pkt_cls.h): a program either
 * lets the frame continue, rewritten or not, or drops it. Nothing else is returned.
 */
#define NETSLOT_VERDICT_OK 0   /* TC_ACT_OK */
#define NETSLOT_VERDICT_DROP 2 /* TC_ACT_SHOT */

/*
 * Why a frame was dropped. Written to skb->cb[0] just before TC_ACT_SHOT, so
 * BPF_PROG_TEST_RUN (ctx_out) and a tc tracer can tell drops apart; a dropped skb is
 * freed, so the scratch word is seen by nobody else.
 */
enum netslot_drop {
	NETSLOT_DROP_NONE = 0,
	/* VXLAN on a slot whose lease has no tenant network (vni 0). */
	NETSLOT_DROP_NO_TENANT = 1,
	/* Inbound VXLAN whose VNI is not the lease's VNI. */
	NETSLOT_DROP_VNI_MISMATCH = 2,
	/* Outbound VXLAN whose VNI is not the dummy VNI the slot's device was created with. */
	NETSLOT_DROP_VNI_NOT_DUMMY = 3,
	/* UDP to the VXLAN port whose VXLAN header is missing from the frame. */
	NETSLOT_DROP_VXLAN_TRUNCATED = 4,
	/* A helper failed half-way through a rewrite: never let a half-NATed frame out. */
	NETSLOT_DROP_REWRITE_FAILED = 5,
	/* Over the lease's bandwidth (token bucket of the `rates` map). */
	NETSLOT_DROP_RATE = 6,
	/* IPv4 on eth0 that no slot owns: unknown MAC, or another slot's MAC (the `unattributed` count). */
	NETSLOT_DROP_UNATTRIBUTED = 7,
	/* The guest's destination is not allowed by its lease's egress policy (lib/policy.h). */
	NETSLOT_DROP_POLICY = 8,
	/* IPv6 on an eth0 whose lease has no IPv6 (no `slots6` entry for its ifindex). */
	NETSLOT_DROP_IPV6_OFF = 9,
	/*
	 * IPv6 the translation does not carry: out, not from the guest's address; in, not to
	 * the outside address; or with extension headers (bar one fragment header).
	 */
	NETSLOT_DROP_IPV6_REFUSED = 10,
};

#define NETSLOT_NSEC_PER_SEC 1000000000ULL

/* Offsets inside the IPv4 header (struct iphdr) and the L4 headers, in bytes. */
#define IP_OFF_CHECK 10
#define IP_OFF_SADDR 12
#define IP_OFF_DADDR 16
#define TCP_OFF_CHECK 16
#define UDP_OFF_CHECK 6
#define ICMP_OFF_CHECK 2
#define ICMP_HLEN 8
#define VXLAN_OFF_VNI 4

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* ICMPv4 types that carry the offending packet's IPv4 header (RFC 792). */
#define ICMP_T_DEST_UNREACH 3
#define ICMP_T_SOURCE_QUENCH 4
#define ICMP_T_REDIRECT 5
#define ICMP_T_TIME_EXCEEDED 11
#define ICMP_T_PARAMETERPROB 12

/*
 * Bytes pulled into the linear area before parsing: Ethernet (14) + IPv4 with options
 * (60) + the most any branch reads after it (ICMP header 8 + inner IPv4 20).
 */
#define NETSLOT_PULL_LEN (14 + 60 + 28)

#endif
