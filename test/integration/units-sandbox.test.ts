/**
 * The appliance's own units run sandboxed (issue 10 point 8): systemd's offline analysis of the unit
 * files as shipped in the base overlay. `verify` catches a misspelt or misplaced directive (systemd
 * would ignore it at boot, silently dropping that protection); `security` scores what is left open.
 * The ExecStart binary is swapped for /bin/true, since the agent exists only inside the image.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasCommand, run } from '../../builder/src/util/exec.ts';

const UNITS_DIR = 'overlays/base/usr/lib/systemd/system';
/** systemd-analyze's exposure scale: 10 is no sandbox at all (both units scored 9.8 before). */
const MAX_EXPOSURE: Record<string, number> = { 'geminik8s-agent.service': 7.0, 'geminik8s-grow-data.service': 6.0 };

for (const [unit, max] of Object.entries(MAX_EXPOSURE)) {
  test(`${unit} passes systemd-analyze verify and its exposure is at most ${max}`, async (t) => {
    if (!(await hasCommand('systemd-analyze'))) return t.fail('systemd-analyze is missing: install the Debian package systemd');
    const dir = await mkdtemp(join(tmpdir(), 'g8s-units-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const text = await readFile(join(UNITS_DIR, unit), 'utf8');
    t.regex(text, /^ExecStart=\/usr\/lib\/geminik8s\/geminik8s-agent/m);
    const file = join(dir, unit);
    await writeFile(file, text.replace(/^ExecStart=\/usr\/lib\/geminik8s\/geminik8s-agent/m, 'ExecStart=/bin/true'));

    // verify exits 0 on an unknown key and only says so on stderr: any output is a finding.
    const verify = await execa('systemd-analyze', ['verify', '--man=no', file], { reject: false, all: true });
    t.is(verify.exitCode, 0);
    t.is(String(verify.all).trim(), '', `systemd-analyze verify ${unit}`);

    const security = await run('systemd-analyze', ['security', '--offline=true', '--no-pager', file]);
    const exposure = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(security)?.[1]);
    t.log(`${unit}: exposure ${exposure}`);
    t.true(exposure <= max, `${unit}: exposure ${exposure} > ${max}\n${security}`);
    for (const directive of [
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectKernelModules=yes',
      'RestrictNamespaces=yes',
      'SystemCallArchitectures=native',
    ]) {
      t.regex(text, new RegExp(`^${directive}$`, 'm'), `${unit} sets ${directive}`);
    }
  });
}
