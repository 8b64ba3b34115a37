/**
 * Where the agent speaks: one JSON object per line on stdout (journald), and short human lines on the
 * console (serial or screen) for the technician and the image e2e test.
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs';

export type Level = 'info' | 'warn' | 'error';

export interface Logger {
  event(level: Level, event: string, fields?: Record<string, unknown>): void;
}

/** Field names whose values are never written, whatever a caller passes. */
const REDACTED_KEYS = new Set(['secret', 'password', 'token']);

export function jsonLogger(write: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  return {
    event(level, event, fields = {}) {
      const record = { ts: new Date().toISOString(), level, event, ...fields };
      write(`${JSON.stringify(record, (k, v: unknown) => (REDACTED_KEYS.has(k) ? '[redacted]' : v))}\n`);
    },
  };
}

/**
 * The agent's most recent log lines, kept in memory for `geminik8s-agent logs` (GET /events): the
 * operator's `geminik8s logs` merges both boxes' without reading journald. Lines arrive already
 * redacted by the logger; journald keeps the whole history.
 */
export interface EventRing {
  push(line: string): void;
  /** The newest `count` lines, oldest first. */
  last(count: number): string[];
}

export function eventRing(capacity: number): EventRing {
  const lines: string[] = [];
  return {
    push(line) {
      lines.push(line.endsWith('\n') ? line.slice(0, -1) : line);
      if (lines.length > capacity) lines.splice(0, lines.length - capacity);
    },
    last: (count) => lines.slice(-Math.max(0, count)),
  };
}

export interface ConsoleOut {
  line(text: string): void;
  close(): void;
}

/**
 * Opens the console for appending. O_NOCTTY: the agent is a session leader under systemd and must
 * not acquire the console as its controlling terminal. When the console cannot be opened the lines
 * go to the log only (reason logged once).
 */
export function openConsole(path: string, log: Logger): ConsoleOut {
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOCTTY, 0o644);
  } catch (e) {
    log.event('warn', 'console-unavailable', { path, error: (e as Error).message });
  }
  return {
    line(text) {
      log.event('info', 'console', { text });
      if (fd === undefined) return;
      try {
        writeSync(fd, `${text}\n`);
      } catch (e) {
        log.event('warn', 'console-write-failed', { path, error: (e as Error).message });
      }
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
