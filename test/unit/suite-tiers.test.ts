import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../../builder/src/cli/paths.ts';

/**
 * `make test` runs every image test except the slow tiers (test/run-suite.mjs), and each slow tier
 * has a make target of its own: a test in both would run in CI too, one in neither would never run.
 */
test('every image test runs in make test or in a make target of its own, never in both', (t) => {
  const suite = readFileSync(path.join(REPO_ROOT, 'test/run-suite.mjs'), 'utf8');
  const list = /const SLOW_TIERS = new Set\(\[([^\]]*)\]\)/.exec(suite)?.[1] ?? '';
  const slow = [...list.matchAll(/'(test\/image\/[^']+)'/g)].map((m) => m[1]!).sort();
  t.true(slow.length > 0, 'the slow tiers are listed');
  const makefile = readFileSync(path.join(REPO_ROOT, 'Makefile'), 'utf8');
  const targeted = [...makefile.matchAll(/test\/image\/[\w-]+\.test\.ts/g)].map((m) => m[0]).sort();
  t.deepEqual([...new Set(targeted)], slow, 'the make targets name exactly the slow tiers');
  const files = readdirSync(path.join(REPO_ROOT, 'test/image')).filter((x) => x.endsWith('.test.ts'));
  for (const f of slow) t.true(files.includes(path.basename(f)), `${f} exists`);
});
