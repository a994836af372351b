// deploy/kubernetes: yamllint (Debian's `yamllint`) and structural checks of the parsed
// manifests (PyYAML, Debian's `python3-yaml`, turns them into JSON). Neither tool is allowed
// to be missing: the test fails rather than skips.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { REPO_ROOT } from "../support/env.js";

const DIR = path.join(REPO_ROOT, "deploy", "kubernetes");

// The parts of the Kubernetes objects the checks read.
interface VolumeMount {
  name: string;
  mountPath: string;
  mountPropagation?: string;
}
interface Container {
  name: string;
  image: string;
  command: string[];
  securityContext?: { privileged?: boolean };
  volumeMounts?: VolumeMount[];
  ports?: Array<{ containerPort: number }>;
  resources?: { limits?: Record<string, unknown> };
}
interface PodSpec {
  hostNetwork?: boolean;
  hostPID?: boolean;
  containers: Container[];
  volumes?: Array<{ name: string; hostPath?: { path: string } }>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: PodSpec & {
    selector: { matchLabels: Record<string, string> };
    template: { metadata: K8sObject["metadata"]; spec: PodSpec };
  };
}

function tool(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: DIR });
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (run scripts/install.sh)`);
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

function load(file: string): K8sObject[] {
  const out = tool("python3", ["-c", "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))", file]);
  return JSON.parse(out) as K8sObject[];
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
    for (const d of docs) assert.ok(d.metadata.name, "every object is named");
    assert.equal(ds.metadata.namespace, "netslot");
  });

  it("the DaemonSet's selector matches its pods, every mount has a volume, every volume is used", () => {
    const spec = ds.spec.template.spec;
    for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) assert.equal(ds.spec.template.metadata.labels?.[k], v);
    const volumes = new Set((spec.volumes ?? []).map((v) => v.name));
    const used = new Set<string>();
    for (const c of spec.containers) {
      assert.ok(c.name && c.image && Array.isArray(c.command), `container ${c.name} has name, image, command`);
      for (const m of c.volumeMounts ?? []) {
        assert.ok(volumes.has(m.name), `${c.name} mounts unknown volume ${m.name}`);
        used.add(m.name);
        if (m.mountPropagation) assert.ok(["None", "HostToContainer", "Bidirectional"].includes(m.mountPropagation));
      }
    }
    assert.deepEqual([...volumes].filter((v) => !used.has(v)), []);
  });

  it("runs the daemon and the device plugin with host network and PID, privileged, with what they need", () => {
    const spec = ds.spec.template.spec;
    assert.equal(spec.hostNetwork, true);
    assert.equal(spec.hostPID, true);
    const hostPath = (name: string | undefined) => (spec.volumes ?? []).find((v) => v.name === name)?.hostPath?.path;
    const container = (name: string) => spec.containers.find((c) => c.name === name)!;
    const mount = (c: Container, p: string) => (c.volumeMounts ?? []).find((m) => m.mountPath === p);
    const flag = (c: Container, f: string) => c.command[c.command.indexOf(f) + 1] ?? "";
    const daemon = container("daemon");
    const plugin = container("device-plugin");
    assert.deepEqual(daemon.command.slice(0, 2), ["netslot", "daemon"]);
    assert.deepEqual(plugin.command.slice(0, 2), ["netslot", "device-plugin"]);
    for (const c of [daemon, plugin]) assert.equal(c.securityContext?.privileged, true);
    // Slot namespaces must propagate from the daemon's container to the host.
    assert.equal(mount(daemon, "/run/netns")?.mountPropagation, "Bidirectional");
    assert.equal(hostPath(mount(daemon, "/run/netns")?.name), "/run/netns");
    assert.equal(hostPath(mount(daemon, "/sys/fs/bpf")?.name), "/sys/fs/bpf");
    assert.equal(hostPath(mount(daemon, "/var/lib/netslot")?.name), "/var/lib/netslot");
    // The containers share the API socket's directory.
    const metrics = container("metrics");
    assert.deepEqual(metrics.command.slice(0, 2), ["netslot", "metrics-exporter"]);
    assert.equal(metrics.securityContext?.privileged, undefined, "the exporter needs no privilege");
    for (const c of [plugin, metrics]) assert.equal(mount(daemon, "/run/netslot")?.name, mount(c, "/run/netslot")?.name);
    const listen = flag(metrics, "--listen");
    assert.equal(String(metrics.ports?.[0]?.containerPort), listen.split(":")[1]);
    assert.equal(ds.spec.template.metadata.annotations?.["prometheus.io/port"], listen.split(":")[1]);
    assert.equal(flag(plugin, "--socket"), "/run/netslot/api.sock");
    const kubeletDir = flag(plugin, "--kubelet-dir");
    for (const sub of ["device-plugins", "pod-resources"]) {
      const m = mount(plugin, `${kubeletDir}/${sub}`);
      assert.ok(m, `device plugin mounts ${kubeletDir}/${sub}`);
      assert.equal(hostPath(m.name), `/var/lib/kubelet/${sub}`);
    }
  });

  it("the example pod requests one netslot.dev/slot", () => {
    const [pod] = load("example-pod.yaml");
    assert.equal(pod?.kind, "Pod");
    assert.equal(pod.apiVersion, "v1");
    assert.equal(pod.spec.containers[0]?.resources?.limits?.["netslot.dev/slot"], 1);
  });
});
