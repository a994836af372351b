const D="/work/main/dist/src";
const p = await import(`${D}/kernel/procfs.js`);
const ns = p.nsIdOf("/run/netns/fpx2");
for (let i=0;i<5;i++){ const t=performance.now(); const h=p.tunHolders("tap0", ns); console.log(performance.now()-t, h); }
const { withNetns } = await import(`${D}/kernel/netns.js`);
const { NetlinkSocket, NETLINK_ROUTE } = await import(`${D}/kernel/netlink/socket.js`);
const { Attrs, encodeMessage } = await import(`${D}/kernel/netlink/codec.js`);
withNetns("/run/netns/fpx2", () => {
  const s = NetlinkSocket.open(NETLINK_ROUTE, {strict:true});
  for (const m of s.dump(encodeMessage(18, 0, [Buffer.alloc(16)]))) {
    const a = new Attrs(m.payload, 16);
    console.log(a.str(3), "carrier", a.u8(33));
  }
});
