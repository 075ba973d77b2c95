import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { PassThrough, type Readable } from 'node:stream';

/**
 * How long a request may make no progress (no byte sent or received) while it waits on the
 * server before its connection is dropped and the request retried: a stalled TCP connection
 * costs this, not the command's whole timeout.
 */
export const defaultIdleTimeoutMs = 30_000;

/** The error a stalled connection is destroyed with; SDK retry policies treat ETIMEDOUT as transient. */
export class StalledError extends Error {
  override name = 'TimeoutError';
  readonly code = 'ETIMEDOUT';
  constructor(idleMs: number, where: string) {
    super(`no progress for ${idleMs / 1000} s on the connection to ${where} (a stalled connection)`);
  }
}

/**
 * Whether requests go through a proxy from the standard variables: the Azure and Google
 * clients then make their own proxy agents, which an agent of ours would replace.
 */
export function proxyConfigured(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy);
}

const stalledResponses = new WeakMap<object, StalledError>();

/** The StalledError a response was destroyed with (a wrapper may have reported a bare abort instead). */
export function stallOf(response: unknown): StalledError | undefined {
  return response && typeof response === 'object' ? stalledResponses.get(response) : undefined;
}

export function isStalled(error: unknown): boolean {
  let e: unknown = error;
  for (let depth = 0; e && depth < 5; depth++) {
    if (e instanceof StalledError || /a stalled connection/.test((e as Error).message ?? '')) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Whether a connection is quiet because of this process, not the server: the response is
 * not read because its reader is full (a restore writing to a slow disk, a database busy
 * with an index), or the request body waits on its own source (a dump still thinking).
 */
function waitingOnUs(socket: net.Socket): boolean {
  if (socket.connecting) return false;
  const request = (socket as { _httpMessage?: http.ClientRequest | null })._httpMessage;
  if (!request) return false;
  const response = (request as { res?: http.IncomingMessage | null }).res;
  if (response) return response.readableLength >= response.readableHighWaterMark;
  if (request.writableEnded) return false; // the whole request is sent: the server owes an answer
  return request.writableLength === 0 && socket.writableLength === 0;
}

/**
 * Polices one connection: while a request is on it and neither side moved a byte for
 * `idleMs` (and not because of us), it is destroyed with a StalledError. Its own timer, not
 * the socket's timeout, which HTTP clients reset as they please.
 */
function watch(socket: net.Socket, idleMs: number): void {
  let read = -1;
  let written = -1;
  let since = Date.now();
  const timer = setInterval(
    () => {
      const busy = Boolean((socket as { _httpMessage?: unknown })._httpMessage);
      if (socket.bytesRead !== read || socket.bytesWritten !== written || !busy || waitingOnUs(socket)) {
        read = socket.bytesRead;
        written = socket.bytesWritten;
        since = Date.now();
        return;
      }
      if (Date.now() - since < idleMs) return;
      const where = `${socket.remoteAddress ?? 'the server'}:${socket.remotePort ?? ''}`;
      const error = new StalledError(idleMs, where);
      // A response half-read fails with this error, not a bare "aborted".
      const request = (socket as { _httpMessage?: { res?: http.IncomingMessage | null } })._httpMessage;
      if (request?.res && !request.res.complete) {
        stalledResponses.set(request.res, error);
        request.res.destroy(error);
      }
      socket.destroy(error);
    },
    Math.max(50, Math.min(1000, idleMs / 4)),
  );
  timer.unref();
  socket.once('close', () => clearInterval(timer));
}

/**
 * HTTP(S) agents whose connections are dropped after `idleMs` without progress while the
 * server owes bytes (connecting, reading the request, answering): the SDKs see ETIMEDOUT
 * and retry. A connection that is quiet because this process is not reading, or has
 * nothing to send yet, is left alone.
 */
export function idleAgents(idleMs: number): { http: http.Agent; https: https.Agent } {
  const options = { keepAlive: true, maxSockets: 64 };
  class IdleHttpAgent extends http.Agent {
    override createConnection(
      o: http.ClientRequestArgs,
      cb?: (err: Error | null, stream: import('node:stream').Duplex) => void,
    ) {
      const socket = super.createConnection(o, cb);
      if (socket) watch(socket as net.Socket, idleMs);
      return socket;
    }
  }
  class IdleHttpsAgent extends https.Agent {
    override createConnection(
      o: https.RequestOptions,
      cb?: (err: Error | null, stream: import('node:stream').Duplex) => void,
    ) {
      const socket = super.createConnection(o, cb);
      if (socket) watch(socket as net.Socket, idleMs);
      return socket;
    }
  }
  return { http: new IdleHttpAgent(options), https: new IdleHttpsAgent(options) };
}

/**
 * `source` with its errors replaced by `translate(error)`, so that a download that breaks
 * half-way is reported as a storage error naming the storage, not as a bare socket error.
 */
export function translatingErrors(source: Readable, translate: (error: unknown) => Error): Readable {
  const out = new PassThrough({ highWaterMark: source.readableHighWaterMark });
  source.on('error', (error) => out.destroy(translate(error)));
  out.on('close', () => {
    if (!source.destroyed && !source.readableEnded) source.destroy();
  });
  source.pipe(out);
  return out;
}
