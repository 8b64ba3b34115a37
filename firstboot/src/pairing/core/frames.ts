/**
 * Newline-delimited JSON framing for the pairing channel. Pure. A frame longer than the limit is
 * an error (the connection is dropped), never buffered without bound.
 */

/** Large enough for the cluster secrets (CA key + certs + passwords), small enough to bound memory. */
export const MAX_FRAME_BYTES = 256 * 1024;

export class FrameError extends Error {}

export function encodeFrame(message: unknown, maxBytes = MAX_FRAME_BYTES): Buffer {
  const text = JSON.stringify(message);
  if (text === undefined) throw new FrameError('message is not JSON-serialisable');
  const buf = Buffer.from(`${text}\n`, 'utf8');
  if (buf.length - 1 > maxBytes) throw new FrameError(`frame of ${buf.length - 1} bytes exceeds the limit of ${maxBytes}`);
  return buf;
}

/** Splits a byte stream into frames; each returned frame is parsed JSON (unknown, validate next). */
export class FrameDecoder {
  #parts: Buffer[] = [];
  #size = 0;
  constructor(private readonly maxBytes = MAX_FRAME_BYTES) {}

  /** Frames completed by `chunk`. Throws FrameError on an oversized frame or invalid JSON. */
  push(chunk: Buffer): unknown[] {
    const out: unknown[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      this.#check(this.#size + piece.length);
      const line = this.#parts.length > 0 ? Buffer.concat([...this.#parts, piece]) : piece;
      this.#parts = [];
      this.#size = 0;
      start = nl + 1;
      if (line.length === 0) throw new FrameError('empty frame');
      try {
        out.push(JSON.parse(line.toString('utf8')));
      } catch {
        throw new FrameError('frame is not valid JSON');
      }
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      this.#check(this.#size + rest.length);
      this.#parts.push(Buffer.from(rest));
      this.#size += rest.length;
    }
    return out;
  }

  #check(size: number): void {
    if (size > this.maxBytes) throw new FrameError(`frame exceeds the limit of ${this.maxBytes} bytes`);
  }
}
