// tapctl: does to a slot's tap what a VMM (or a guest that escaped into it) can do
// through the tap's fd, then closes the fd, leaving whatever outlives it. Run inside
// the slot's namespace: `ip netns exec NS tapctl tap0 SETTING`.
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(const char *what) {
	fprintf(stderr, "tapctl: %s: %s\n", what, strerror(errno));
	return 1;
}

// A socket-filter program that drops everything (returns 0).
static int drop_prog(void) {
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insns = (uintptr_t)insns;
	attr.insn_cnt = 2;
	attr.license = (uintptr_t)"GPL";
	return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: tapctl TAP txfilter|sockfilter|ebpffilter|steering|offload|vnethdrsz|vnetle|sndbuf|owner|group|flags|carrier\n");
		return 2;
	}
	const char *s = argv[2];
	int fd = open("/dev/net/tun", O_RDWR);
	if (fd < 0) return fail("open /dev/net/tun");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	// As Firecracker and QEMU attach; "flags" attaches as a VMM with other flags would.
	ifr.ifr_flags = strcmp(s, "flags") == 0 ? IFF_TAP : IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) return fail("TUNSETIFF");
	int v;
	if (strcmp(s, "txfilter") == 0) {
		struct { struct tun_filter f; uint8_t mac[6]; } f = { { 0, 1 }, { 0x02, 0, 0, 0, 0, 0x99 } };
		if (ioctl(fd, TUNSETTXFILTER, &f) < 0) return fail("TUNSETTXFILTER");
	} else if (strcmp(s, "sockfilter") == 0) {
		struct sock_filter drop[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
		struct sock_fprog prog = { 1, drop };
		if (ioctl(fd, TUNATTACHFILTER, &prog) < 0) return fail("TUNATTACHFILTER");
	} else if (strcmp(s, "ebpffilter") == 0 || strcmp(s, "steering") == 0) {
		int prog = drop_prog();
		if (prog < 0) return fail("BPF_PROG_LOAD");
		if (ioctl(fd, strcmp(s, "steering") == 0 ? TUNSETSTEERINGEBPF : TUNSETFILTEREBPF, &prog) < 0) return fail("TUNSET*EBPF");
	} else if (strcmp(s, "offload") == 0) {
		if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) return fail("TUNSETOFFLOAD");
	} else if (strcmp(s, "vnethdrsz") == 0) {
		v = 12;
		if (ioctl(fd, TUNSETVNETHDRSZ, &v) < 0) return fail("TUNSETVNETHDRSZ");
	} else if (strcmp(s, "vnetle") == 0) {
		v = 1;
		if (ioctl(fd, TUNSETVNETLE, &v) < 0) return fail("TUNSETVNETLE");
	} else if (strcmp(s, "sndbuf") == 0) {
		v = 4096;
		if (ioctl(fd, TUNSETSNDBUF, &v) < 0) return fail("TUNSETSNDBUF");
	} else if (strcmp(s, "owner") == 0) {
		if (ioctl(fd, TUNSETOWNER, 1234) < 0) return fail("TUNSETOWNER");
	} else if (strcmp(s, "group") == 0) {
		if (ioctl(fd, TUNSETGROUP, 4321) < 0) return fail("TUNSETGROUP");
	} else if (strcmp(s, "carrier") == 0) {
		v = 0;
		if (ioctl(fd, TUNSETCARRIER, &v) < 0) return fail("TUNSETCARRIER");
	} else if (strcmp(s, "flags") != 0) {
		fprintf(stderr, "tapctl: unknown setting %s\n", s);
		return 2;
	}
	close(fd);
	return 0;
}
