// Runs the whole ava suite and ends with the one summary line CI reads: "N passed, N failed".
import { spawn } from 'node:child_process';

const child = spawn('npx', ['ava', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString()).slice(-4000);
});
child.on('close', (code, signal) => {
  const count = (re) => Number(re.exec(tail)?.[1] ?? 0);
  const passed = count(/(\d+) tests? passed/);
  // Failures, timeouts, uncaught exceptions and unhandled rejections all count as failed.
  const failed = count(/(\d+) tests? failed/) + count(/(\d+) uncaught exceptions?/) + count(/(\d+) unhandled rejections?/) + (/Timed out/.test(tail) ? 1 : 0);
  const exit = code ?? 1;
  process.stdout.write(`\n${passed} passed, ${exit !== 0 && failed === 0 ? 1 : failed} failed\n`);
  process.exit(signal ? 1 : exit);
});
