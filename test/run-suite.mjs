// Runs the ava suite and ends with the one summary line CI reads: "N passed, N failed".
// The fault matrix (test/fault) runs on its own, serially: its failover timings must not compete
// with other pairs for the two cores. The QEMU image tests run after everything else, one file at
// a time: three TCG VMs at once on two cores starve each other's udev and timers.
import { spawn } from 'node:child_process';

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

const explicit = process.argv.slice(2);
const groups = explicit.length > 0 ? [explicit] : [['test/unit', 'test/integration', 'test/pair'], ['--concurrency', '1', 'test/fault'], ['--concurrency', '1', 'test/image']];
let passed = 0;
let failed = 0;
let exit = 0;
for (const args of groups) {
  const r = await runAva(args);
  passed += r.passed;
  failed += r.failed;
  exit ||= r.exit;
}
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exit(exit);
