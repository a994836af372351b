const D="/work/main/dist/src";
const { withNetns } = await import(`${D}/kernel/netns.js`);
const { NetlinkSocket, NETLINK_ROUTE } = await import(`${D}/kernel/netlink/socket.js`);
const { Attrs, encodeMessage } = await import(`${D}/kernel/netlink/codec.js`);
withNetns("/run/netns/fpx2", () => {
  const s = NetlinkSocket.open(NETLINK_ROUTE, {strict:true});
  const h = Buffer.alloc(16);
  for (const m of s.dump(encodeMessage(18, 0, [h]))) {
    const a = new Attrs(m.payload, 16);
    if (a.str(3) !== "tap0") continue;
    const info = a.nested(18); const data = info?.nested(2);
    console.log(info?.str(1), data?.list.map(x => [x.type, x.value.toString("hex")]), (m.payload.readUInt32LE(8)).toString(16));
  }
});
