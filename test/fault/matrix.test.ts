/**
 * The fault-injection matrix (issue 4): one pair of real agents in network namespaces, each
 * scenario FAULT_REPS times (default 1; `make fault-matrix` runs 3) under a writer that puts
 * numbered keys through Kine on the VIP. Every run must lose no acknowledged key, never show both
 * nodes as writable primaries, come back to a healthy synchronous pair with no manual step, and
 * take writes again after the fault. See test/helpers/fault-matrix.ts.
 *
 * FAULT_SCENARIOS (e.g. "abc") limits the scenarios; FAULT_VERBOSE=1 prints progress on stderr.
 */
import test, { type ExecutionContext } from 'ava';
import { dumpOnFailure } from '../helpers/pair-checks.ts';
import { describe, FaultMatrix, SCENARIOS, summarize } from '../helpers/fault-matrix.ts';

function reps(): number {
  const raw = process.env.FAULT_REPS ?? '';
  if (raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 50) throw new Error(`FAULT_REPS=${raw}: expected an integer in [1, 50]`);
  return n;
}

const only = process.env.FAULT_SCENARIOS ?? '';
const log = process.env.FAULT_VERBOSE ? (line: string) => process.stderr.write(`fault-matrix: ${line}\n`) : undefined;

let matrix: FaultMatrix | undefined;
let setupError: string | undefined;

test.before(async () => {
  try {
    reps();
    matrix = await FaultMatrix.create(log ? { log } : {});
  } catch (e) {
    // Reported by every test below (a prerequisite missing must fail, never skip).
    setupError = (e as Error).message;
  }
});

test.after.always(async () => {
  await matrix?.destroy();
});

function need(t: ExecutionContext): FaultMatrix | undefined {
  if (matrix) return matrix;
  t.fail(`fault matrix setup failed: ${setupError ?? 'unknown error'}`);
  return undefined;
}

for (const s of SCENARIOS) {
  if (only !== '' && !only.includes(s.id)) continue;
  test.serial(`fault ${s.id}: ${s.title}`, async (t) => {
    const m = need(t);
    if (!m) return;
    // m.pair, not a copy: a pair broken beyond recovery is replaced by the next run.
    t.teardown(() => dumpOnFailure(t, m.pair));
    const n = reps();
    for (let rep = 1; rep <= n; rep++) {
      const r = await m.run(s.id, rep);
      const failed = r.error !== undefined || r.verifyError !== undefined || r.missing?.length !== 0 || r.dualPrimary.length > 0 || r.faultToFirstWriteMs === undefined;
      t.log(failed ? describe(r) : summarize(r));
      const at = `${s.id} run ${rep}/${n}`;
      t.is(r.error, undefined, `${at}: the scenario completed and the pair returned to healthy synchronous replication`);
      t.is(r.verifyError, undefined, `${at}: the keys were read back through the VIP`);
      t.deepEqual(r.missing, [], `${at}: every acknowledged key is present after recovery`);
      t.deepEqual(r.dualPrimary, [], `${at}: never both nodes writable primaries (${r.samples} samples)`);
      t.not(r.faultToFirstWriteMs, undefined, `${at}: a put sent after the fault was acknowledged`);
      // A broken run leaves little to learn from the next ones on the same scenario.
      if (failed) break;
    }
  });
}
