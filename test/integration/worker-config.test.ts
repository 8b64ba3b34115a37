/**
 * The container runtime reads the configuration the agent writes for it: Debian's containerd (the
 * one the image carries) loads containerd.toml (firstboot/src/kubernetes/core/worker.ts) and its
 * merged configuration has our sandbox image, cgroup driver and pod-network folders. A key
 * containerd did not know, or TOML it could not parse, would stop the runtime on every box.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WORKER_APPLIANCE, workerFiles } from '../../firstboot/src/kubernetes/core/worker.ts';
import { run } from '../helpers/netns.ts';

test('Debian’s containerd loads the agent’s containerd.toml: baked pause image, systemd cgroups, root on /data, our CNI folders', async (t) => {
  const files = workerFiles({
    node: { name: 'node-a', ip: '192.168.50.11' },
    peer: { name: 'node-b', ip: '192.168.50.12' },
    lanInterface: 'eth0',
    clusterCidr: '10.42.0.0/16',
    serviceCidr: '10.43.0.0/16',
    upstreamDns: ['192.168.50.1'],
    clusterDns: '10.43.0.10',
    pauseImage: 'geminik8s.local/pause:3.10',
    nodeDir: WORKER_APPLIANCE.nodeDir,
    cniConfDir: WORKER_APPLIANCE.cniConfDir,
    cniStateDir: WORKER_APPLIANCE.cniStateDir,
    apiPort: 6443,
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-containerd-'));
  try {
    const file = path.join(dir, 'containerd.toml');
    await writeFile(file, files.find((f) => f.path === 'containerd.toml')!.text);
    const dump = await run(['containerd', '--config', file, 'config', 'dump']).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
    if (dump.code === -1) return t.fail(`containerd is missing: apt-get install containerd (${dump.stderr})`);
    t.is(dump.code, 0, dump.stderr);
    t.notRegex(dump.stderr, /level=(error|warning)/, dump.stderr);
    const merged = dump.stdout;
    t.regex(merged, /^root = "\/data\/containerd"$/m);
    t.regex(merged, /^\s+sandbox_image = "geminik8s\.local\/pause:3\.10"$/m);
    t.regex(merged, /^\s+SystemdCgroup = true$/m);
    t.regex(merged, /^\s+conf_dir = "\/run\/geminik8s\/cni\/net\.d"$/m);
    t.regex(merged, /^\s+bin_dir = "\/usr\/lib\/cni"$/m);
    t.regex(merged, /^\s+default_runtime_name = "runc"$/m);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
