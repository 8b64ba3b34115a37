/**
 * The one validator of the project's YAML inputs: profiles and hardware definitions (builder),
 * site files (builder and agent) and the image's own description (agent). Each is declared once, as
 * a JSON schema from which its TypeScript type is derived (json-schema-to-ts); ajv checks it and
 * fills in the schema's defaults, and an optional cross-field pass says what a schema cannot (an
 * address plan, a secret's strength). Every problem comes out in one format, at its file:line:column.
 *
 * Pure: the caller reads the file.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isMap, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { isIPv4, isIPv4Cidr, parseCidr } from './subnet.ts';

/** One problem in a YAML input file, located precisely enough to fix without guessing. */
export interface ConfigIssue {
  file: string;
  /** 1-based; 0 when the problem is the file itself (missing, unreadable). */
  line: number;
  column: number;
  /** Path of the offending field, e.g. `components.kine.version` or `network.nodes[1].address`; `(document)` for the whole file. */
  field: string;
  /** What is wrong when "found X; expected Y" alone does not say it (e.g. "the gateway is also the VIP"). */
  message?: string;
  found: string;
  /** A full phrase: `expected …`, `allowed: …`, `allowed fields here: …`. */
  allowed: string;
}

export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
  }
}

/** `site.yaml:12:5: network.vip: <message>; found "x"; expected y` — one line per problem, for logs and CLIs. */
export function formatIssue(i: ConfigIssue): string {
  const where = i.line > 0 ? `${i.file}:${i.line}:${i.column}` : i.file;
  return `${where}: ${i.field}: ${i.message ? `${i.message}; ` : ''}found ${i.found}; ${i.allowed}`;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; issues: ConfigIssue[] };

export type FieldPath = (string | number)[];

/** What a cross-field pass gets: the parsed value (schema-checked only where `failed` says no) and a way to report at a field. */
export interface CrossCheck {
  value: unknown;
  /**
   * Reports a problem with `path`, positioned at its value, at its key (`'key'`: a field that should
   * not be there) or at another field's value (a missing field that another one asks for).
   */
  report(path: FieldPath, issue: { message?: string; found: string; allowed: string }, at?: 'key' | FieldPath): void;
  /** True when the schema already reported `path` or something inside it: a rule that reads it stays quiet. */
  failed(path: FieldPath): boolean;
}

// useDefaults: a schema's `default` is filled in here, once, rather than patched in where a value is read.
const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true, verbose: true, useDefaults: true });
// `x-hint` on a property: advice shown when it is missing (e.g. which command creates it).
ajv.addKeyword({ keyword: 'x-hint', schemaType: 'string' });
// `x-secret` on a property: its value is never echoed in an issue (a pair secret, or a private key pasted by mistake).
ajv.addKeyword({ keyword: 'x-secret', schemaType: 'boolean' });
ajv.addFormat('ipv4', isIPv4);
ajv.addFormat('ipv4-cidr', isIPv4Cidr);
ajv.addFormat('ipv4-range', (text: string) => parseCidr(text) !== undefined);
const compiled = new WeakMap<object, ValidateFunction>();

/**
 * Parses YAML text, validates it against a JSON schema (filling in defaults) and runs the
 * cross-field pass, reporting every problem, sorted by position.
 */
export function parseYamlWithSchema<T>(text: string, file: string, schema: object, crossCheck?: (c: CrossCheck) => void): Parsed<T> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => lineCounter.linePos(offset);
  if (doc.errors.length > 0) {
    return {
      ok: false,
      issues: doc.errors.map((e) => {
        const pos = at(e.pos[0]);
        return { file, line: pos.line, column: pos.col, field: '(document)', found: 'invalid YAML', allowed: e.message.split('\n')[0] ?? e.code };
      }),
    };
  }
  const value: unknown = doc.toJS();
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  const valid = validate(value);
  // `if` only says that a `then` failed; the `then` errors themselves are the useful ones.
  const issues = valid ? [] : (validate.errors ?? []).filter((e) => e.keyword !== 'if').map((e) => issueFor(e, doc, value, file, at));
  if (crossCheck && value !== null && typeof value === 'object') {
    const failedPaths = issues.map((i) => i.field);
    crossCheck({
      value,
      report(path, issue, where) {
        const node =
          (where === 'key' ? keyNodeAt(doc, path.slice(0, -1), String(path[path.length - 1])) : undefined) ??
          nearestNode(doc, Array.isArray(where) ? where : path);
        const pos = at(node?.range?.[0] ?? 0);
        issues.push({ file, line: pos.line, column: pos.col, field: fieldName(path), ...issue });
      },
      failed(path) {
        const f = fieldName(path);
        return failedPaths.some((p) => p === f || p.startsWith(`${f}.`) || p.startsWith(`${f}[`));
      },
    });
  }
  if (issues.length === 0) return { ok: true, value: value as T };
  return { ok: false, issues: dedupe(issues).sort((a, b) => a.line - b.line || a.column - b.column) };
}

/** `network.nodes[1].address` from its segments. */
export function fieldName(path: FieldPath): string {
  if (path.length === 0) return '(document)';
  return path.map((p, i) => (typeof p === 'number' || /^[0-9]+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function issueFor(e: ErrorObject, doc: Document, root: unknown, file: string, at: (offset: number) => { line: number; col: number }): ConfigIssue {
  const path: FieldPath = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  let fieldPath = path;
  let node = nearestNode(doc, path);
  const secret = (e.parentSchema as { 'x-secret'?: boolean } | undefined)?.['x-secret'] === true;
  let found = describe(valueAt(root, path), secret);
  let allowed = e.message ?? 'invalid';
  let message: string | undefined;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(e.params.additionalProperty);
      const known = Object.keys(propertiesAt(e.parentSchema));
      const close = closest(key, known);
      fieldPath = [...path, key];
      node = keyNodeAt(doc, path, key) ?? node;
      found = `unknown field "${key}"`;
      allowed = `allowed fields here: ${known.join(', ')}${close ? ` (did you mean "${close}"?)` : ''}`;
      break;
    }
    case 'required': {
      const key = String(e.params.missingProperty);
      found = 'nothing';
      fieldPath = [...path, key];
      allowed = `"${key}" is required${hintFor(e.parentSchema, key)}`;
      break;
    }
    case 'enum':
      allowed = `allowed: ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
      break;
    case 'type': {
      const schema = e.parentSchema as { description?: string; 'x-hint'?: string } | undefined;
      const empty = valueAt(root, path) === null;
      allowed = `expected ${String(e.params.type)}${schema?.description ? ` (${schema.description})` : ''}${empty && schema?.['x-hint'] ? `: ${schema['x-hint']}` : ''}`;
      break;
    }
    case 'pattern':
    case 'format':
      allowed = `expected ${describePattern(e.parentSchema, e.keyword === 'pattern' ? `text matching /${String(e.params.pattern)}/` : `a ${String(e.params.format)} value`)}`;
      break;
    case 'const':
      allowed = `expected ${JSON.stringify(e.params.allowedValue)}`;
      break;
    case 'minItems':
      allowed = `expected at least ${String(e.params.limit)} item${e.params.limit === 1 ? '' : 's'}`;
      break;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum': {
      // The bound crossed, then the description's whole range and meaning.
      const description = (e.parentSchema as { description?: string } | undefined)?.description;
      allowed = `expected a number ${String(e.params.comparison)} ${String(e.params.limit)}${description ? ` (${description})` : ''}`;
      break;
    }
    default:
      allowed = `expected a value that ${e.message ?? 'matches the schema'}`;
  }
  const shown = valueAt(root, path);
  if (secret && shown !== null && typeof shown !== 'object') message = 'the value is not shown: it may be a secret';
  const pos = at(node?.range?.[0] ?? 0);
  return { file, line: pos.line, column: pos.col, field: fieldName(fieldPath), ...(message ? { message } : {}), found, allowed };
}

/** The YAML node at `path`, or the nearest one above it that exists (a missing field is reported at its parent). */
function nearestNode(doc: Document, path: FieldPath): Node | undefined {
  for (let n = path.length; n >= 0; n--) {
    const found = n ? doc.getIn(path.slice(0, n), true) : doc.contents;
    if (found && typeof found === 'object' && 'range' in found) return found as Node;
  }
  return undefined;
}

function keyNodeAt(doc: Document, path: FieldPath, key: string): Node | undefined {
  const parent = path.length ? doc.getIn(path, true) : doc.contents;
  if (!isMap(parent)) return undefined;
  const pair = parent.items.find((p) => String((p.key as { value?: unknown })?.value ?? p.key) === key);
  const k = pair?.key;
  return k && typeof k === 'object' && 'range' in k ? (k as Node) : undefined;
}

function valueAt(root: unknown, path: FieldPath): unknown {
  let cur: unknown = root;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** How a found value is shown: literally, except a secret's, of which only the kind and length are told. */
export function describe(v: unknown, secret = false): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (typeof v === 'object') return 'a mapping';
  if (secret) return typeof v === 'string' ? `a ${v.length}-character string` : `a ${typeof v}`;
  const shown = typeof v === 'string' ? JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v) : String(v);
  return `${typeof v} ${shown}`;
}

function propertiesAt(schema: unknown): Record<string, unknown> {
  const props = (schema as { properties?: Record<string, unknown> } | undefined)?.properties;
  return props ?? {};
}

function hintFor(schema: unknown, key: string): string {
  const prop = propertiesAt(schema)[key] as { 'x-hint'?: string } | undefined;
  return prop?.['x-hint'] ? ` (${prop['x-hint']})` : '';
}

function describePattern(schema: unknown, fallback: string): string {
  return (schema as { description?: string } | undefined)?.description ?? fallback;
}

/** The known name a misspelt one most likely meant: at most one edit in four characters away, else none. */
function closest(name: string, known: string[]): string | undefined {
  let best: { k: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d <= Math.max(1, Math.floor(k.length / 4)) && (!best || d < best.d)) best = { k, d };
  }
  return best?.k;
}

/** Levenshtein distance (insert, delete, substitute), one row at a time. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

function dedupe(issues: ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = formatIssue(i);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
