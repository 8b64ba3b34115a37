/**
 * Strict validation helpers for untrusted pairing messages: exact key sets, bounded strings,
 * safe integers. Pure. Every check fails with a short reason that never echoes the value.
 */

export class SchemaError extends Error {}

export type Obj = Record<string, unknown>;

export function object(v: unknown, where: string, required: readonly string[], optional: readonly string[] = []): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SchemaError(`${where} is not an object`);
  const o = v as Obj;
  for (const k of Object.keys(o)) {
    if (!required.includes(k) && !optional.includes(k)) throw new SchemaError(`${where} has unknown field ${JSON.stringify(k.slice(0, 32))}`);
  }
  for (const k of required) if (!(k in o)) throw new SchemaError(`${where} lacks field ${k}`);
  return o;
}

export function str(o: Obj, k: string, re: RegExp, where: string): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length > 256 || !re.test(v)) throw new SchemaError(`${where}.${k} is malformed`);
  return v;
}

export function int(o: Obj, k: string, min: number, max: number, where: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new SchemaError(`${where}.${k} is not an integer in ${min}..${max}`);
  return v;
}

export function bool(o: Obj, k: string, where: string): boolean {
  const v = o[k];
  if (typeof v !== 'boolean') throw new SchemaError(`${where}.${k} is not a boolean`);
  return v;
}

export const NODE_ID_RE = /^[0-9a-f]{32}$/;
/**
 * The largest term a peer may claim. Terms grow by one per promotion, so no real pair comes near
 * it; a bound keeps a forged or corrupt value from pushing a node's persisted term to where
 * arithmetic on it stops being exact.
 */
export const MAX_TERM = 2 ** 31 - 1;
export const HEX128_RE = /^[0-9a-f]{32}$/;
export const SITE_ID_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const NAME_RE = SITE_ID_RE;
export const ROLE_RE = /^[a-z][a-z-]{0,23}$/;
