/**
 * The ava tests of a fault matrix (test/helpers/fault-matrix.ts), shared by test/fault/matrix.test.ts
 * (etcd keys through Kine on the VIP) and test/fault/kubernetes.test.ts (ConfigMaps through the
 * Kubernetes API on the VIP), so both make the same assertions: one serial test per scenario, each
 * run FAULT_REPS times (default 1, at most 50), on one pair set up before the first test.
 *
 * FAULT_SCENARIOS (e.g. "abc") limits the scenarios; FAULT_VERBOSE=1 prints progress on stderr.
 */
import test, { type ExecutionContext } from 'ava';
import { describe, FaultMatrix, SCENARIOS, summarize, type ScenarioId, type ScenarioResult } from './fault-matrix.ts';
import { dumpOnFailure } from './pair-checks.ts';

export function faultReps(): number {
  const raw = process.env.FAULT_REPS ?? '';
  if (raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 50) throw new Error(`FAULT_REPS=${raw}: expected an integer in [1, 50]`);
  return n;
}

export interface FaultTestsOptions {
  /** Names this matrix in progress lines and failures ("fault-matrix", "kubernetes"). */
  name: string;
  /** Run the pair with Kubernetes and write ConfigMaps through the API on the VIP. */
  kubernetes?: boolean;
  /** The scenarios this file covers (all by default). */
  scenarios?: readonly ScenarioId[];
  /** Further assertions after each run, on the same pair (e.g. the API answering on the VIP). */
  after?: (t: ExecutionContext, m: FaultMatrix, r: ScenarioResult) => Promise<void>;
}

/**
 * Registers the setup and the scenario tests; returns a getter for the matrix (undefined until the
 * setup succeeded) for further tests of the same file, and `need`, which fails a test when there is none.
 */
export function registerFaultTests(o: FaultTestsOptions): { need: (t: ExecutionContext) => FaultMatrix | undefined } {
  const only = process.env.FAULT_SCENARIOS ?? '';
  const log = process.env.FAULT_VERBOSE ? (line: string) => process.stderr.write(`${o.name}: ${line}\n`) : undefined;
  let matrix: FaultMatrix | undefined;
  let setupError: string | undefined;

  test.before(async () => {
    try {
      faultReps();
      matrix = await FaultMatrix.create({ ...(log ? { log } : {}), ...(o.kubernetes ? { kubernetes: true } : {}) });
    } catch (e) {
      // Reported by every test (a prerequisite missing must fail, never skip).
      setupError = (e as Error).message;
    }
  });

  test.after.always(async () => {
    await matrix?.destroy();
  });

  const need = (t: ExecutionContext): FaultMatrix | undefined => {
    if (matrix) return matrix;
    t.fail(`${o.name} setup failed: ${setupError ?? 'unknown error'}`);
    return undefined;
  };

  const things = o.kubernetes ? 'ConfigMap' : 'key';
  for (const s of SCENARIOS) {
    if (o.scenarios && !o.scenarios.includes(s.id)) continue;
    if (only !== '' && !only.includes(s.id)) continue;
    test.serial(`fault ${s.id}: ${s.title}${o.kubernetes ? ' (ConfigMaps through the API on the VIP)' : ''}`, async (t) => {
      const m = need(t);
      if (!m) return;
      // m.pair, not a copy: a pair broken beyond recovery is replaced by the next run.
      t.teardown(() => dumpOnFailure(t, m.pair));
      const n = faultReps();
      for (let rep = 1; rep <= n; rep++) {
        const r = await m.run(s.id, rep);
        const failed =
          r.error !== undefined || r.verifyError !== undefined || r.missing?.length !== 0 || r.dualPrimary.length > 0 || r.faultToFirstWriteMs === undefined;
        t.log(failed ? describe(r) : `${summarize(r)}${r.notes.map((n) => `\n  ${n}`).join('')}`);
        const at = `${s.id} run ${rep}/${n}`;
        t.is(
          r.error,
          undefined,
          `${at}: the scenario completed and the pair returned to healthy synchronous replication${o.kubernetes ? ' with /readyz on the VIP answering 200' : ''}`,
        );
        t.is(r.verifyError, undefined, `${at}: the ${things}s were read back through the VIP`);
        t.deepEqual(r.missing, [], `${at}: every acknowledged ${things} is present after recovery`);
        t.deepEqual(r.dualPrimary, [], `${at}: never both nodes writable primaries (${r.samples} samples)`);
        t.not(r.faultToFirstWriteMs, undefined, `${at}: a ${o.kubernetes ? 'ConfigMap create' : 'put'} sent after the fault was acknowledged`);
        await o.after?.(t, m, r);
        // A broken run leaves little to learn from the next ones on the same scenario.
        if (failed) break;
      }
    });
  }
  return { need };
}
