// taprelay: a guest stand-in's "virtual NIC" for tests.
//
//   taprelay <slot-netns-path> <guest-netns-path> <ifname-in-guest-ns>
//
// Attaches to the slot's persistent tap0 (TUNSETIFF inside the slot namespace, which makes
// the tap LOWER_UP, exactly as a VMM attaching it would) and to an AF_PACKET socket on
// <ifname> inside the guest namespace, then copies frames both ways until killed.
//
// Both ends speak virtio_net_hdr (tap IFF_VNET_HDR, packet PACKET_VNET_HDR), the format a
// virtio-net VM uses on a tap. That carries GSO/checksum-offload metadata through the relay,
// so a TSO'd 64 KiB TCP segment from the guest veth is handed to the tap as one GSO skb
// (which the kernel segments to the slot's MTU) instead of an oversized frame; no ethtool
// is needed to switch offloads off.
//
// Prints "ready\n" on stdout once both ends are open. Dies with its parent (PDEATHSIG).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

// sizeof(struct virtio_net_hdr): the default vnet header size of both tun and AF_PACKET.
#define VNET_HDR_LEN 10
// A GSO frame is at most 64 KiB of payload plus headers.
#define BUF_LEN (65536 + 512)
// Frames moved per direction per poll round, so one busy direction cannot starve the other.
#define BATCH 64

static unsigned char buf[BUF_LEN];
static unsigned long long dropped;

static void die(const char *what) {
  fprintf(stderr, "taprelay: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void enter_netns(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  if (setns(fd, CLONE_NEWNET) < 0) die("setns");
  close(fd);
}

// Errors that lose one frame but leave the relay healthy (full queues, link briefly down,
// a frame the other side refuses).
static int transient(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == ENETDOWN ||
         err == EMSGSIZE || err == EINVAL || err == EIO || err == ENXIO;
}

static int open_tap(void) {
  // TUNSETIFF would silently create a fresh, non-persistent tap0 in the slot: refuse instead.
  if (if_nametoindex("tap0") == 0) {
    fprintf(stderr, "taprelay: no tap0 in the slot namespace\n");
    exit(1);
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "tap0", IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    // A tap created multi-queue only accepts multi-queue attachments.
    if (errno != EINVAL) die("TUNSETIFF tap0");
    ifr.ifr_flags |= IFF_MULTI_QUEUE;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF tap0");
  }
  int hdr = VNET_HDR_LEN;
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) die("TUNSETVNETHDRSZ");
  // Let the slot hand us TSO'd/unchecksummed frames, as it would to a virtio-net guest;
  // the packet socket passes that metadata on to the guest veth. Optional: on failure the
  // kernel simply segments and checksums before the tap.
  if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0)
    fprintf(stderr, "taprelay: TUNSETOFFLOAD: %s (continuing without)\n", strerror(errno));
  return fd;
}

static int open_packet(const char *ifname) {
  unsigned int ifindex = if_nametoindex(ifname);
  if (ifindex == 0) die(ifname);
  // Protocol 0 until bound: created with ETH_P_ALL it would see every interface briefly.
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket(AF_PACKET)");
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) die("PACKET_VNET_HDR");
  // Our own writes leave through ifname too; without this we would read them back.
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0)
    die("PACKET_IGNORE_OUTGOING");
  int size = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)ifindex;
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) die("bind(AF_PACKET)");
  return fd;
}

static void set_nonblock(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl");
}

// Slot -> guest: one read() of the tap is one frame (with its vnet header).
static void tap_to_packet(int tap, int pkt) {
  for (int i = 0; i < BATCH; i++) {
    ssize_t n = read(tap, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (transient(errno)) { dropped++; continue; }
      die("read tap0");
    }
    if (n == 0) { fprintf(stderr, "taprelay: tap0 closed\n"); exit(1); }
    if (n <= VNET_HDR_LEN) continue;
    while (send(pkt, buf, (size_t)n, 0) < 0) {
      if (errno == EINTR) continue;
      if (transient(errno)) { dropped++; break; }
      die("send packet");
    }
  }
}

// Guest -> slot: MSG_TRUNC reports the real length, so an oversized frame is dropped whole
// rather than forwarded cut short.
static void packet_to_tap(int pkt, int tap) {
  for (int i = 0; i < BATCH; i++) {
    ssize_t n = recv(pkt, buf, sizeof buf, MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (transient(errno)) { dropped++; continue; }
      die("recv packet");
    }
    if ((size_t)n > sizeof buf) { dropped++; continue; }
    if (n <= VNET_HDR_LEN) continue;
    while (write(tap, buf, (size_t)n) < 0) {
      if (errno == EINTR) continue;
      if (transient(errno)) { dropped++; break; }
      die("write tap0");
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s <slot-netns-path> <guest-netns-path> <ifname-in-guest-ns>\n", argv[0]);
    return 2;
  }
  // A test runner that dies must not leave tap0 held (and LOWER_UP) behind it.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() == 1) return 1;
  signal(SIGPIPE, SIG_IGN);

  // Open each end while inside its namespace; the fds stay bound there afterwards.
  enter_netns(argv[1]);
  int tap = open_tap();
  enter_netns(argv[2]);
  int pkt = open_packet(argv[3]);
  set_nonblock(tap);
  set_nonblock(pkt);

  fputs("ready\n", stdout);
  fflush(stdout);

  struct pollfd pfd[2] = {{.fd = tap, .events = POLLIN}, {.fd = pkt, .events = POLLIN}};
  for (;;) {
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (pfd[0].revents & (POLLHUP | POLLNVAL)) { fprintf(stderr, "taprelay: tap0 gone\n"); return 1; }
    if (pfd[1].revents & POLLNVAL) { fprintf(stderr, "taprelay: packet socket gone\n"); return 1; }
    if (pfd[1].revents & POLLERR) {
      // Socket errors (e.g. ENETDOWN when the veth went down) are reported once; clear them.
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(pkt, SOL_SOCKET, SO_ERROR, &err, &len);
    }
    if (pfd[0].revents & (POLLIN | POLLERR)) tap_to_packet(tap, pkt);
    if (pfd[1].revents & POLLIN) packet_to_tap(pkt, tap);
  }
}
