/**
 * Issue 16, the cheap part of a reproducible, secret-free image: the default image's root tree (what
 * goes onto root A) holds no private key, no machine id or random seed, and no file time later than
 * the build's SOURCE_DATE_EPOCH. The build is the real one, `make image`'s, into the default cache
 * (after `make image` of the same commit every step is reused); `make repro` checks the rest.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cacheRoot } from '../../builder/src/cli/paths.ts';
import { events, geminik8s } from '../helpers/cli.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-tree-'));
let tree = '';
let sourceDateEpoch = 0;

test.before(async () => {
  const r = await geminik8s(['build', '--profile', 'edge-standard', '--hardware', 'generic-x86_64-uefi', '--out', work, '--json']);
  if (r.exitCode !== 0) throw new Error(`the build failed:\n${r.stderr.slice(-3000)}`);
  const plan = events(r.stdout).find((e) => e.event === 'plan') as { artifactName: string; steps: { id: string; key: string }[] };
  tree = path.join(cacheRoot(), 'steps', 'rootTree', plan.steps.find((s) => s.id === 'rootTree')!.key, 'tree');
  sourceDateEpoch = (JSON.parse(await readFile(path.join(work, plan.artifactName, 'manifest.json'), 'utf8')) as { sourceDateEpoch: number }).sourceDateEpoch;
});

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Every path under `root`, relative, the root itself included as ''. */
async function walk(root: string): Promise<string[]> {
  const found = [''];
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) found.push(path.relative(root, path.join(e.parentPath, e.name)));
  return found;
}

/**
 * A PEM or OpenSSH private key: the BEGIN line followed by its base64 body. Programs (OpenSSL, Go's
 * crypto) carry the words "PRIVATE KEY" as bare strings, never with a body.
 */
function holdsPrivateKey(bytes: Buffer): boolean {
  for (let at = bytes.indexOf('-----BEGIN '); at !== -1; at = bytes.indexOf('-----BEGIN ', at + 1)) {
    if (/^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{16}/.test(bytes.subarray(at, at + 120).toString('latin1'))) return true;
  }
  return false;
}

/** The md5 of each file as its Debian package ships it (dpkg's md5sums), by path relative to the root, /usr merged. */
async function packagedMd5s(root: string): Promise<Map<string, string>> {
  const info = path.join(root, 'var/lib/dpkg/info');
  const sums = new Map<string, string>();
  for (const name of (await readdir(info)).filter((n) => n.endsWith('.md5sums'))) {
    for (const line of (await readFile(path.join(info, name), 'utf8')).split('\n')) {
      const m = /^([0-9a-f]{32}) {2}(.+)$/.exec(line);
      if (m) sums.set(m[2]!.replace(/^(bin|sbin|lib|lib64)\//, 'usr/$1/'), m[1]!);
    }
  }
  return sums;
}

test('no private key in the root tree but the test keys Debian packages ship (ssl-cert snakeoil, SSH host keys and any key made while building are gone)', async (t) => {
  const packaged = await packagedMd5s(tree);
  const withKeys: string[] = [];
  for (const rel of await walk(tree)) {
    const file = path.join(tree, rel);
    if (!(await lstat(file)).isFile()) continue;
    const bytes = await readFile(file);
    // GnuTLS carries its self-test keys: the same bytes on every Debian system, nobody's secret.
    if (holdsPrivateKey(bytes) && packaged.get(rel) !== createHash('md5').update(bytes).digest('hex')) withKeys.push(rel);
  }
  t.deepEqual(withKeys, []);
  t.deepEqual(
    (await readdir(path.join(tree, 'etc/ssh'))).filter((n) => n.startsWith('ssh_host_')),
    [],
    'SSH host keys are made per box at first boot',
  );
  t.deepEqual(await readdir(path.join(tree, 'etc/ssl/private')).catch(() => []), []);
  t.deepEqual(
    (await readdir(path.join(tree, 'etc/ssl/certs'))).filter((n) => n.includes('snakeoil')),
    [],
  );
});

test("no machine identity: an empty machine-id (systemd makes one per boot), dbus's pointing at it, no random seed or credential secret", async (t) => {
  const machineId = await lstat(path.join(tree, 'etc/machine-id'));
  t.true(machineId.isFile());
  t.is(machineId.size, 0);
  const dbus = await lstat(path.join(tree, 'var/lib/dbus/machine-id')).catch(() => undefined);
  if (dbus) t.is(await readlink(path.join(tree, 'var/lib/dbus/machine-id')), '/etc/machine-id');
  for (const seed of ['var/lib/systemd/random-seed', 'var/lib/urandom/random-seed', 'var/lib/systemd/credential.secret']) {
    t.is(await lstat(path.join(tree, seed)).catch(() => undefined), undefined, seed);
  }
});

test('no file in the root tree is dated after SOURCE_DATE_EPOCH', async (t) => {
  t.true(sourceDateEpoch > 0);
  const later: string[] = [];
  for (const rel of await walk(tree)) {
    const st = await lstat(path.join(tree, rel));
    if (st.mtimeMs > sourceDateEpoch * 1000) later.push(`/${rel} ${st.mtime.toISOString()}`);
  }
  t.deepEqual(later.slice(0, 20), [], `${later.length} entries later than ${new Date(sourceDateEpoch * 1000).toISOString()}`);
});
