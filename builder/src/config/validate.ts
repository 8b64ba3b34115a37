import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isMap, LineCounter, parseDocument, type Document, type Node } from 'yaml';

/** One problem in a YAML input file, located precisely enough to fix without guessing. */
export interface ConfigIssue {
  file: string;
  /** 1-based; 0 when the problem is the file itself (missing, unreadable). */
  line: number;
  column: number;
  /** Dotted path of the offending field, e.g. `components.kine.version`; `(document)` for the whole file. */
  field: string;
  found: string;
  allowed: string;
}

export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
  }
}

export function formatIssue(i: ConfigIssue): string {
  const where = i.line > 0 ? `${i.file}:${i.line}:${i.column}` : i.file;
  return `${where}: ${i.field}: found ${i.found}; ${i.allowed}`;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; issues: ConfigIssue[] };

// useDefaults: a schema's `default` is filled in here, once, rather than patched in where a value is read.
const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true, verbose: true, useDefaults: true });
// `x-hint` on a property: advice shown when it is missing (e.g. which command creates it).
ajv.addKeyword({ keyword: 'x-hint', schemaType: 'string' });
const compiled = new WeakMap<object, ValidateFunction>();

/**
 * Parses YAML text and validates it against a JSON schema, reporting every problem with
 * its file:line:column. Pure: the caller reads the file.
 */
export function parseYamlWithSchema<T>(text: string, file: string, schema: object): Parsed<T> {
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
  if (validate(value)) return { ok: true, value: value as T };
  // `if` only says that a `then` failed; the `then` errors themselves are the useful ones.
  const issues = dedupe((validate.errors ?? []).filter((e) => e.keyword !== 'if').map((e) => issueFor(e, doc, value, file, at)));
  return { ok: false, issues };
}

function issueFor(
  e: ErrorObject,
  doc: Document,
  root: unknown,
  file: string,
  at: (offset: number) => { line: number; col: number },
): ConfigIssue {
  const path = e.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  let fieldPath = path;
  let node = nodeAt(doc, path);
  let found = describe(valueAt(root, path));
  let allowed = e.message ?? 'invalid';
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(e.params.additionalProperty);
      fieldPath = [...path, key];
      node = keyNodeAt(doc, path, key) ?? node;
      found = `unknown field "${key}"`;
      allowed = `allowed fields here: ${Object.keys(propertiesAt(e.parentSchema)).join(', ')}`;
      break;
    }
    case 'required':
      found = 'nothing';
      fieldPath = [...path, String(e.params.missingProperty)];
      allowed = `"${String(e.params.missingProperty)}" is required${hintFor(e.parentSchema, String(e.params.missingProperty))}`;
      break;
    case 'enum':
      allowed = `allowed: ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
      break;
    case 'type': {
      const d = (e.parentSchema as { description?: string } | undefined)?.description;
      allowed = `expected ${String(e.params.type)}${d ? ` (${d})` : ''}`;
      break;
    }
    case 'pattern':
      allowed = `expected ${describePattern(e.parentSchema, String(e.params.pattern))}`;
      break;
    case 'const':
      allowed = `expected ${JSON.stringify(e.params.allowedValue)}`;
      break;
    default:
      allowed = `expected a value that ${e.message ?? 'matches the schema'}`;
  }
  const range = node?.range;
  const pos = at(range ? range[0] : 0);
  return { file, line: pos.line, column: pos.col, field: fieldPath.length ? fieldPath.join('.') : '(document)', found, allowed };
}

function nodeAt(doc: Document, path: string[]): Node | undefined {
  const n = path.length ? doc.getIn(path, true) : doc.contents;
  return n && typeof n === 'object' && 'range' in n ? (n as Node) : undefined;
}

function keyNodeAt(doc: Document, path: string[], key: string): Node | undefined {
  const parent = nodeAt(doc, path);
  if (!isMap(parent)) return undefined;
  const pair = parent.items.find((p) => String((p.key as { value?: unknown })?.value ?? p.key) === key);
  const k = pair?.key;
  return k && typeof k === 'object' && 'range' in k ? (k as Node) : undefined;
}

function valueAt(root: unknown, path: string[]): unknown {
  let cur: unknown = root;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (typeof v === 'object') return 'a mapping';
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

function describePattern(schema: unknown, pattern: string): string {
  const d = (schema as { description?: string } | undefined)?.description;
  return d ?? `text matching /${pattern}/`;
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
