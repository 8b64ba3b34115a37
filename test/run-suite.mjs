// Runs the ava suite and ends with the one summary line CI reads: "N passed, N failed".
// First it resolves the component binaries the tests run (Kine; upstream Kubernetes, whose cold
// build takes 10–25 min, 3 GiB and both cores) once, up front, with progress lines: never inside an
// ava timeout, never twice at once (test/helpers/components.ts). A component that cannot be had
// counts as one failure, named before the summary line; the tests still run (those that need it
// fail naming it).
// The fault matrix (test/fault) runs on its own, serially: its failover timings must not compete
// with other pairs for the two cores. The QEMU image tests run after everything else, one file at
// a time: three TCG VMs at once on two cores starve each other's udev and timers.
// test/image/kubernetes.test.ts (workloads on the QEMU pair, about an hour on two cores) is a slow
// tier of its own, out of the default groups: `make test-kubernetes-image` names it explicitly.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';

function runAva(args) {
  return new Promise((resolve) => {
    const child = spawn('npx', ['ava', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      output += chunk.toString();
    });
    child.on('close', (code, signal) => {
      // ava's verbose reporter marks every test ✔ or ✘; a crashed file or timeout adds its own ✘ line.
      const passed = (output.match(/^\s*✔ /gm) ?? []).length;
      const failed = (output.match(/^\s*✘ /gm) ?? []).length + (/Timed out while running tests/.test(output) ? 1 : 0);
      const exit = signal ? 1 : (code ?? 1);
      resolve({ passed, failed: exit !== 0 && failed === 0 ? 1 : failed, exit });
    });
  });
}

/**
 * The components the selected test paths run: all of them for the whole suite (or no path at all);
 * Kine for the pair, integration and fault tests; Kubernetes for the fault tests (kubernetes.test.ts)
 * and the image tests (the default image carries it).
 */
function componentsFor(groups) {
  const paths = groups.flat().filter((a) => !a.startsWith('-') && /[/.]|^test/.test(a));
  if (paths.length === 0 || paths.some((p) => /^(\.\/?)?(test\/?)?$/.test(p))) return ['kine', 'kubernetes'];
  const wanted = new Set();
  for (const p of paths.map((x) => x.replace(/^\.\//, ''))) {
    if (/^test\/(pair|integration|fault)(\/|$)/.test(p)) wanted.add('kine');
    // The arm64 images (boot-arm64, boot-rpi4, upgrade-rpi4) are datastore-only and build their own components for arm64.
    if ((/^test\/(fault|image)(\/|$)/.test(p) && !/arm64|rpi4/.test(p)) || /kubernetes/.test(p)) wanted.add('kubernetes');
  }
  return ['kine', 'kubernetes'].filter((c) => wanted.has(c));
}

/** test/helpers/components.ts resolves (builds on a miss) each component; its progress goes to stderr as it comes. */
function resolveComponents(names) {
  return new Promise((resolve) => {
    const started = Date.now();
    process.stderr.write(`run-suite: resolving the components the tests need: ${names.join(', ')}\n`);
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/components.ts', ...names], { stdio: ['ignore', 'pipe', 'pipe'] });
    let errTail = '';
    child.stdout.on('data', (chunk) => {
      for (const line of chunk
        .toString()
        .split('\n')
        .filter((l) => l.trim() !== ''))
        process.stderr.write(`run-suite: resolved ${line}\n`);
    });
    child.stderr.on('data', (chunk) => {
      process.stderr.write(chunk);
      errTail = (errTail + chunk.toString()).slice(-3000);
    });
    child.on('error', (e) => resolve({ ok: false, why: `could not start node: ${e.message}` }));
    child.on('close', (code, signal) => {
      const took = `${((Date.now() - started) / 1000).toFixed(0)} s`;
      if (code === 0) {
        process.stderr.write(`run-suite: components ready (${took})\n`);
        resolve({ ok: true });
        return;
      }
      const named =
        errTail
          .split('\n')
          .filter((l) => / FAILED: /.test(l))
          .join('\n') || errTail.trim().split('\n').slice(-3).join('\n');
      resolve({ ok: false, why: `${signal ? `killed by ${signal}` : `exit ${code}`} after ${took}\n${named}` });
    });
  });
}

const explicit = process.argv.slice(2);
/** Test files that run only when named (their own make target), never in `make test`. */
const SLOW_TIERS = new Set([
  'test/image/kubernetes.test.ts',
  'test/image/upgrade.test.ts',
  'test/image/pair-upgrade.test.ts',
  'test/image/boot-arm64.test.ts',
  'test/image/boot-rpi4.test.ts',
  'test/image/upgrade-rpi4.test.ts',
]);
const imageTests = readdirSync('test/image')
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => `test/image/${f}`)
  .filter((f) => !SLOW_TIERS.has(f))
  .sort();
const groups =
  explicit.length > 0
    ? [explicit]
    : [
        ['test/unit', 'test/integration', 'test/pair'],
        ['--concurrency', '1', 'test/fault'],
        ['--concurrency', '1', ...imageTests],
      ];
let passed = 0;
let failed = 0;
let exit = 0;
const problems = [];
const components = componentsFor(groups);
if (components.length > 0) {
  const r = await resolveComponents(components);
  if (!r.ok) {
    failed += 1;
    exit ||= 1;
    problems.push(`✘ components (${components.join(', ')}) could not be resolved: ${r.why}`);
    process.stderr.write(`run-suite: ${problems.at(-1)}\n`);
  }
}
for (const args of groups) {
  const r = await runAva(args);
  passed += r.passed;
  failed += r.failed;
  exit ||= r.exit;
}
if (problems.length > 0) process.stdout.write(`\n${problems.join('\n')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exit(exit);
