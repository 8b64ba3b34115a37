/**
 * The pairing channel: TCP + TLS 1.2 with a pre-shared key derived from the site pair secret
 * (HKDF label "channel-psk"); PSK identity = the dialer's node id. Cipher suite
 * ECDHE-PSK-CHACHA20-POLY1305: authenticated by the PSK *and* forward secret, so the cluster
 * secrets sent over it stay safe even if the pair secret leaks later. No certificates are
 * involved. Messages: newline-delimited JSON (../core/frames.ts, ../core/protocol.ts).
 */
import { createServer, connect, type TLSSocket, type Server } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../../adapters/output.ts';
import { encodeFrame, FrameDecoder, FrameError, MAX_FRAME_BYTES } from '../core/frames.ts';
import type { PairKeys } from '../core/keys.ts';
import { parseChannelMessage, type ChannelMessage } from '../core/protocol.ts';
import { NODE_ID_RE, SchemaError } from '../core/schema.ts';

export const DEFAULT_CHANNEL_PORT = 7946;
export const CHANNEL_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305';
const TLS_OPTS = { ciphers: CHANNEL_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;
const HANDSHAKE_TIMEOUT_MS = 5000;

export class ChannelError extends Error {}
/** The peer failed the PSK handshake: it does not hold this site's pair secret. */
export class HandshakeRefusedError extends ChannelError {}

export interface Channel {
  /** The other side's node id: its PSK identity (server side) or the id dialled (client side). */
  readonly peerNodeId: string;
  readonly remoteAddress: string;
  send(msg: ChannelMessage): void;
  /** 32 bytes unique to this TLS session (RFC 5705 exporter): binds node-key proofs to it. */
  keyingMaterial(): Buffer;
  /** Next message; rejects on timeout, close, oversized/invalid frame. */
  receive(timeoutMs: number): Promise<ChannelMessage>;
  close(): void;
}

class TlsChannel implements Channel {
  readonly remoteAddress: string;
  #queue: ChannelMessage[] = [];
  #waiter: { resolve: (m: ChannelMessage) => void; reject: (e: Error) => void } | undefined;
  #failure: Error | undefined;
  #decoder: FrameDecoder;

  constructor(
    private readonly socket: TLSSocket,
    readonly peerNodeId: string,
    private readonly maxFrameBytes: number,
  ) {
    this.remoteAddress = socket.remoteAddress ?? 'unknown';
    this.#decoder = new FrameDecoder(maxFrameBytes);
    socket.on('data', (chunk: Buffer) => {
      let frames: unknown[];
      try {
        frames = this.#decoder.push(chunk);
        for (const f of frames) this.#deliver(parseChannelMessage(f));
      } catch (e) {
        if (e instanceof FrameError || e instanceof SchemaError) this.#fail(new ChannelError(`protocol error from ${this.remoteAddress}: ${e.message}`));
        else throw e;
      }
    });
    socket.on('error', (e) => this.#fail(new ChannelError(`channel to ${this.remoteAddress}: ${e.message}`)));
    socket.on('close', () => this.#fail(new ChannelError(`peer ${peerNodeId} at ${this.remoteAddress} closed the channel`)));
  }

  #deliver(m: ChannelMessage): void {
    if (this.#failure) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve(m);
    } else if (this.#queue.length < 16) this.#queue.push(m);
    else this.#fail(new ChannelError(`peer ${this.peerNodeId} sent too many unanswered messages`));
  }

  #fail(e: Error): void {
    if (!this.#failure) this.#failure = e;
    this.socket.destroy();
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.reject(this.#failure);
    }
  }

  keyingMaterial(): Buffer {
    return this.socket.exportKeyingMaterial(32, 'EXPORTER-geminik8s-node-auth', Buffer.from('geminik8s pairing channel v2'));
  }

  send(msg: ChannelMessage): void {
    if (this.#failure) throw this.#failure;
    this.socket.write(encodeFrame(msg, this.maxFrameBytes));
  }

  receive(timeoutMs: number): Promise<ChannelMessage> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#waiter) return Promise.reject(new ChannelError('concurrent receive'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new ChannelError(`timed out after ${timeoutMs} ms waiting for peer ${this.peerNodeId}`));
      }, timeoutMs);
      this.#waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}

export function refusedHandshakeMessage(peer: string, address: string): string {
  return `pairing refused: peer ${peer} at ${address} failed the pair-secret handshake (different site secret?)`;
}

export interface ChannelServerOptions {
  keys: PairKeys;
  nodeId: string;
  /** Default 0.0.0.0. */
  host?: string;
  /** Default 7946 (TCP; the beacons use 7946/udp). 0 = any. */
  port?: number;
  log: Logger;
  maxFrameBytes?: number;
  /** Refusal reason for a peer node id (e.g. DiscoveryView.refusalFor); undefined admits it. */
  admit?(peerNodeId: string): string | undefined;
  /** Admitted sessions. When omitted, sessions queue for {@link ChannelServer.nextSession}. */
  onSession?(channel: Channel): void;
}

export interface ChannelServer {
  readonly port: number;
  /** Next admitted inbound session (optionally only from `peerNodeId`; others are closed). */
  nextSession(timeoutMs: number, peerNodeId?: string): Promise<Channel | undefined>;
  close(): Promise<void>;
}

export async function startChannelServer(opts: ChannelServerOptions): Promise<ChannelServer> {
  const { log } = opts;
  const maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
  const identities = new WeakMap<TLSSocket, string>();
  const queue: Channel[] = [];
  let waiter: ((c: Channel) => void) | undefined;

  const server: Server = createServer({
    ...TLS_OPTS,
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    pskIdentityHint: 'geminik8s-pair',
    pskCallback(socket: TLSSocket, identity: string) {
      if (!NODE_ID_RE.test(identity)) return null;
      identities.set(socket, identity);
      return opts.keys.channelPsk;
    },
  });

  server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
    const peer = identities.get(socket);
    const address = socket.remoteAddress ?? 'unknown';
    if (peer !== undefined && /BAD_RECORD_MAC|DECRYPT/i.test(`${err.code ?? ''} ${err.message}`)) {
      log.event('warn', 'pairing-refused', { peer, address, reason: 'psk-mismatch', message: refusedHandshakeMessage(peer, address) });
    } else {
      log.event('warn', 'pairing-handshake-failed', { peer: peer ?? null, address, error: err.code ?? err.message });
    }
  });

  server.on('secureConnection', (socket: TLSSocket) => {
    const peer = identities.get(socket);
    if (peer === undefined) return void socket.destroy();
    const channel = new TlsChannel(socket, peer, maxFrameBytes);
    if (peer === opts.nodeId) {
      log.event('error', 'pairing-refused', {
        peer,
        address: channel.remoteAddress,
        reason: 'duplicate-node-id',
        message: `pairing refused: peer at ${channel.remoteAddress} uses this box's node id (cloned disk?)`,
      });
      channel.send({ t: 'refused', reason: 'duplicate node id (cloned disk?)' });
      return channel.close();
    }
    const refusal = opts.admit?.(peer);
    if (refusal !== undefined) {
      log.event('warn', 'pairing-refused', {
        peer,
        address: channel.remoteAddress,
        reason: refusal,
        message: `pairing refused: peer ${peer} at ${channel.remoteAddress}: ${refusal}`,
      });
      channel.send({ t: 'refused', reason: refusal });
      return channel.close();
    }
    log.event('info', 'pairing-session-accepted', { peer, address: channel.remoteAddress });
    if (opts.onSession) return opts.onSession(channel);
    if (waiter) {
      const w = waiter;
      waiter = undefined;
      return w(channel);
    }
    queue.push(channel);
    while (queue.length > 4) queue.shift()?.close();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? DEFAULT_CHANNEL_PORT, opts.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log.event('error', 'pairing-server-error', { error: e.message }));
  const port = (server.address() as AddressInfo).port;
  log.event('info', 'pairing-channel-listening', { host: opts.host ?? '0.0.0.0', port });

  return {
    port,
    async nextSession(timeoutMs, peerNodeId) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        let c = queue.shift();
        if (!c) {
          const left = deadline - performance.now();
          if (left <= 0) return undefined;
          c = await new Promise<Channel | undefined>((resolve) => {
            const timer = setTimeout(() => {
              waiter = undefined;
              resolve(undefined);
            }, left);
            waiter = (ch) => {
              clearTimeout(timer);
              resolve(ch);
            };
          });
          if (!c) return undefined;
        }
        if (peerNodeId === undefined || c.peerNodeId === peerNodeId) return c;
        c.send({ t: 'refused', reason: `busy: pairing with another node` });
        c.close();
      }
    },
    close() {
      for (const c of queue.splice(0)) c.close();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface ConnectOptions {
  keys: PairKeys;
  nodeId: string;
  peerNodeId: string;
  host: string;
  port?: number;
  log: Logger;
  timeoutMs?: number;
  maxFrameBytes?: number;
}

/** Dials a peer's pairing channel. Rejects with HandshakeRefusedError when the PSKs differ. */
export function connectChannel(opts: ConnectOptions): Promise<Channel> {
  const { log, host, peerNodeId } = opts;
  const port = opts.port ?? DEFAULT_CHANNEL_PORT;
  const timeoutMs = opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const socket = connect({
      ...TLS_OPTS,
      host,
      port,
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ identity: opts.nodeId, psk: opts.keys.channelPsk }),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ChannelError(`connecting to peer ${peerNodeId} at ${host}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(new TlsChannel(socket, peerNodeId, opts.maxFrameBytes ?? MAX_FRAME_BYTES));
    });
    const onError = (err: Error & { code?: string }) => {
      clearTimeout(timer);
      socket.destroy();
      if (/BAD_RECORD_MAC|DECRYPT/i.test(`${err.code ?? ''} ${err.message}`)) {
        const message = refusedHandshakeMessage(peerNodeId, host);
        log.event('warn', 'pairing-refused', { peer: peerNodeId, address: host, reason: 'psk-mismatch', message });
        reject(new HandshakeRefusedError(message));
      } else reject(new ChannelError(`connecting to peer ${peerNodeId} at ${host}:${port}: ${err.message}`));
    };
    socket.once('error', onError);
  });
}
