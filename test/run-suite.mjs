// Runs the whole ava suite and ends with the one summary line CI reads: "N passed, N failed".
import { spawn } from 'node:child_process';

const child = spawn('npx', ['ava', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  process.stdout.write(`\n${passed} passed, ${exit !== 0 && failed === 0 ? 1 : failed} failed\n`);
  process.exit(exit);
});
