/**
 * The fault-injection matrix (issue 4): one pair of real agents in network namespaces, each
 * scenario FAULT_REPS times (default 1; `make fault-matrix` runs 3) under a writer that puts
 * numbered keys through Kine on the VIP. Every run must lose no acknowledged key, never show both
 * nodes as writable primaries, come back to a healthy synchronous pair with no manual step, and
 * take writes again after the fault. See test/helpers/fault-matrix.ts and fault-tests.ts.
 *
 * FAULT_SCENARIOS (e.g. "abc") limits the scenarios; FAULT_VERBOSE=1 prints progress on stderr.
 */
import { registerFaultTests } from '../helpers/fault-tests.ts';

registerFaultTests({ name: 'fault-matrix' });
