import test from 'ava';
import { execa } from 'execa';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kineSpec, resolveComponent } from '../../builder/src/components/resolve.ts';
import { hasCommand } from '../../builder/src/util/exec.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const cacheDir = process.env.GEMINIK8S_CACHE ?? join(repoRoot, '.cache');
const KINE_VERSION = process.env.KINE_VERSION ?? 'v0.17.5';

test('kine amd64 from its Go module (or the component cache) runs and reports its version', async (t) => {
  if (!(await hasCommand('go'))) {
    return t.fail(
      "the Go toolchain that builds Kine is not on PATH: install Go >= 1.22 (Debian 12's own golang-go is 1.19, too old) and put `go` on PATH; `make deps` checks for it",
    );
  }
  const started = Date.now();
  const kine = await resolveComponent(kineSpec(KINE_VERSION), { arch: 'amd64', cacheDir, repoRoot, onProgress: (l) => t.log(l) });
  t.log(`${kine.source} ${kine.path} ${(kine.size / 1e6).toFixed(1)} MB sha256 ${kine.sha256} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  t.true(['go-module', 'artifact-dir'].includes(kine.source));
  t.regex(kine.sha256, /^[0-9a-f]{64}$/);
  const { stdout } = await execa(kine.path, ['--version']);
  t.regex(stdout, new RegExp(`kine version ${KINE_VERSION.replace(/[.+]/g, '\\$&')}`));
  // statically linked (CGO_ENABLED=0): runs on the appliance without any libc match
  if (!(await hasCommand('file'))) return t.fail('`file` is missing (it shows Kine is statically linked): apt-get install file');
  t.regex((await execa('file', ['-b', kine.path])).stdout, /statically linked/);

  // resolving again is a cache hit
  const t1 = Date.now();
  const again = await resolveComponent(kineSpec(KINE_VERSION), { arch: 'amd64', cacheDir, repoRoot });
  t.is(again.sha256, kine.sha256);
  t.true(Date.now() - t1 < 10_000);
});
