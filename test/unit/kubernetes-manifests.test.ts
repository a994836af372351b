// deploy/kubernetes: yamllint (Debian's `yamllint`) and structural checks of the parsed
// manifests (PyYAML, Debian's `python3-yaml`, turns them into JSON). Neither tool is allowed
// to be missing: the test fails rather than skips.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { REPO_ROOT } from "../support/env.js";

const DIR = path.join(REPO_ROOT, "deploy", "kubernetes");

// Parsed YAML is explored untyped here; the assertions are what check its shape.
/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call, @typescript-eslint/restrict-plus-operands */
type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function tool(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: DIR });
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (run scripts/install.sh)`);
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

function load(file: string): Obj[] {
  const out = tool("python3", ["-c", "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))", file]);
  return JSON.parse(out) as Obj[];
}

describe("Kubernetes manifests", () => {
  it("pass yamllint", () => {
    tool("yamllint", ["--strict", "-c", ".yamllint", "netslot-daemonset.yaml", "example-pod.yaml"]);
  });

  it("yamllint would catch a broken manifest", () => {
    const r = spawnSync("yamllint", ["--strict", "-c", path.join(DIR, ".yamllint"), "-"], { encoding: "utf8", input: "---\na: 1\na: 2\n" });
    assert.notEqual(r.status, 0);
  });

  const docs = load("netslot-daemonset.yaml");
  const ds = docs.find((d) => d.kind === "DaemonSet")!;

  it("a Namespace and a DaemonSet with the API versions the API server serves", () => {
    assert.deepEqual(docs.map((d) => `${d.apiVersion}/${d.kind}`), ["v1/Namespace", "apps/v1/DaemonSet"]);
    for (const d of docs) assert.ok(d.metadata?.name, "every object is named");
    assert.equal(ds.metadata.namespace, "netslot");
  });

  it("the DaemonSet's selector matches its pods, every mount has a volume, every volume is used", () => {
    const spec = ds.spec.template.spec as Obj;
    for (const [k, v] of Object.entries(ds.spec.selector.matchLabels as Obj)) assert.equal(ds.spec.template.metadata.labels[k], v);
    const volumes = new Set((spec.volumes as Obj[]).map((v) => v.name as string));
    const used = new Set<string>();
    for (const c of spec.containers as Obj[]) {
      assert.ok(c.name && c.image && Array.isArray(c.command), `container ${c.name} has name, image, command`);
      for (const m of c.volumeMounts as Obj[]) {
        assert.ok(volumes.has(m.name), `${c.name} mounts unknown volume ${m.name}`);
        used.add(m.name);
        if (m.mountPropagation) assert.ok(["None", "HostToContainer", "Bidirectional"].includes(m.mountPropagation));
      }
    }
    assert.deepEqual([...volumes].filter((v) => !used.has(v)), []);
  });

  it("runs the daemon and the device plugin with host network and PID, privileged, with what they need", () => {
    const spec = ds.spec.template.spec as Obj;
    assert.equal(spec.hostNetwork, true);
    assert.equal(spec.hostPID, true);
    const hostPath = (name: string) => (spec.volumes as Obj[]).find((v) => v.name === name)?.hostPath?.path as string | undefined;
    const container = (name: string) => (spec.containers as Obj[]).find((c) => c.name === name)!;
    const mount = (c: Obj, p: string) => (c.volumeMounts as Obj[]).find((m) => m.mountPath === p);
    const daemon = container("daemon");
    const plugin = container("device-plugin");
    assert.deepEqual(daemon.command.slice(0, 2), ["netslot", "daemon"]);
    assert.deepEqual(plugin.command.slice(0, 2), ["netslot", "device-plugin"]);
    for (const c of [daemon, plugin]) assert.equal(c.securityContext?.privileged, true);
    // Slot namespaces must propagate from the daemon's container to the host.
    assert.equal(mount(daemon, "/run/netns")?.mountPropagation, "Bidirectional");
    assert.equal(hostPath(mount(daemon, "/run/netns")!.name), "/run/netns");
    assert.equal(hostPath(mount(daemon, "/sys/fs/bpf")!.name), "/sys/fs/bpf");
    assert.equal(hostPath(mount(daemon, "/var/lib/netslot")!.name), "/var/lib/netslot");
    // The two containers share the API socket's directory.
    assert.equal(mount(daemon, "/run/netslot")?.name, mount(plugin, "/run/netslot")?.name);
    assert.equal(plugin.command[plugin.command.indexOf("--socket") + 1], "/run/netslot/api.sock");
    const kubeletDir = plugin.command[plugin.command.indexOf("--kubelet-dir") + 1] as string;
    for (const sub of ["device-plugins", "pod-resources"]) {
      const m = mount(plugin, `${kubeletDir}/${sub}`);
      assert.ok(m, `device plugin mounts ${kubeletDir}/${sub}`);
      assert.equal(hostPath(m.name), `/var/lib/kubelet/${sub}`);
    }
  });

  it("the example pod requests one netslot.dev/slot", () => {
    const [pod] = load("example-pod.yaml");
    assert.equal(pod!.kind, "Pod");
    assert.equal(pod!.apiVersion, "v1");
    assert.equal(pod!.spec.containers[0].resources.limits["netslot.dev/slot"], 1);
  });
});
