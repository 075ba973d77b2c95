/**
 * A TCP proxy on 127.0.0.1 in front of a real server, for fault injection: it forwards bytes
 * both ways and, when a rule matches an HTTP request line the client sends, stalls the
 * connection (reads nothing more and answers nothing, as a dead peer or a black-holed route
 * does) or resets it (TCP RST). Nothing of the server or of the client is mocked.
 */
import net from 'node:net';
import { openStorage, type StorageTuning } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { azuriteConnectionString, startAzurite, startGcs, type TestServer } from './servers.ts';

/**
 * stall: the request is not forwarded and nothing comes back. reset: the connection is reset
 * (after `afterBytes` of the request). stall-response: the request goes through, but only
 * `afterBytes` of the answer come back, then nothing (a download that stops half-way).
 */
export type Fault = 'stall' | 'reset' | 'stall-response';

export interface FaultRule {
  /** Tested against each HTTP request line ("PUT /bucket/key?partNumber=2&uploadId=… HTTP/1.1"). */
  match: RegExp;
  fault: Fault;
  /** How many matching requests get the fault (then they pass); unlimited by default. */
  times?: number;
  /** reset: bytes of the request let through first; stall-response: bytes of the answer. */
  afterBytes?: number;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  /** Every request line seen, in order, with the fault it got (if any). */
  requests: { line: string; fault?: Fault }[];
  /** Adds a rule; rules are tried in order. */
  add(rule: FaultRule): void;
  /** Drops every rule: requests pass from now on. */
  clear(): void;
  /** Connections the proxy is holding open without forwarding. */
  stalled(): number;
  stop(): Promise<void>;
}

const requestLine = /(?:^|\r\n)([A-Z]+ \S+ HTTP\/1\.[01])\r\n/g;

/** Starts a proxy to `target` (host:port or an http:// URL). */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const url = new URL(/^\w+:\/\//.test(target) ? target : `http://${target}`);
  const upstreamPort = Number(url.port || 80);
  const upstreamHost = url.hostname;
  const rules: (FaultRule & { used: number })[] = [];
  const requests: FaultProxy['requests'] = [];
  const sockets = new Set<net.Socket>();
  const stalledSockets = new Set<net.Socket>();

  const pick = (line: string) => {
    for (const rule of rules) {
      if (rule.match.test(line) && (rule.times === undefined || rule.used < rule.times)) {
        rule.used++;
        return rule;
      }
    }
    return undefined;
  };

  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(upstreamPort, upstreamHost);
    sockets.add(upstream);
    let faulted = false;
    /** With stall-response: how many more answer bytes may pass. */
    let answerBudget = Number.POSITIVE_INFINITY;
    const stall = () => {
      faulted = true;
      stalledSockets.add(client);
      client.pause();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (faulted) return;
      const text = chunk.toString('latin1');
      for (const m of text.matchAll(requestLine)) {
        const line = m[1]!;
        const rule = pick(line);
        requests.push({ line, fault: rule?.fault });
        if (!rule) continue;
        if (rule.fault === 'stall-response') {
          answerBudget = rule.afterBytes ?? 0;
          stalledSockets.add(client);
          continue;
        }
        if (rule.fault === 'stall') {
          // Forward nothing of this request: the client waits for an answer that never comes.
          upstream.write(chunk.subarray(0, m.index));
          return stall();
        }
        const keep = Math.min(chunk.length, (m.index ?? 0) + (rule.afterBytes ?? 0));
        upstream.write(chunk.subarray(0, keep));
        faulted = true;
        upstream.destroy();
        client.resetAndDestroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (faulted) return;
      if (answerBudget === Number.POSITIVE_INFINITY) return void client.write(chunk);
      if (answerBudget > 0) client.write(chunk.subarray(0, answerBudget));
      answerBudget -= Math.min(answerBudget, chunk.length);
      if (answerBudget === 0) faulted = true; // hold the connection open, silent
    });
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => {
      sockets.delete(client);
      stalledSockets.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => {
      sockets.delete(upstream);
      if (!faulted) client.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    requests,
    add(rule) {
      rules.push({ ...rule, used: 0 });
    },
    clear() {
      rules.length = 0;
    },
    stalled: () => stalledSockets.size,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A real server behind a fault proxy, opened twice: through the proxy, and directly. */
export interface ProxiedStorage {
  server: TestServer;
  proxy: FaultProxy;
  /** Lifeboat's storage through the proxy. */
  storage: Storage;
  /** The same storage, not through the proxy (to set up and check). */
  direct: Storage;
  stop(): Promise<void>;
}

/** How to put a proxy in front of one kind of server. */
export interface ProxiedServer {
  start: () => Promise<TestServer>;
  /** The server's address, for the proxy. */
  target(server: TestServer): string;
  /** The environment that sends Lifeboat through the proxy instead. */
  via(server: TestServer, proxy: FaultProxy): Record<string, string>;
}

/** An S3 server (s3rver, fauxqs, Ceph RGW) behind the proxy. */
export const proxiedS3 = (start: () => Promise<TestServer>): ProxiedServer => ({
  start,
  target: (s) => s.env.AWS_ENDPOINT_URL_S3!,
  via: (s, p) => ({ ...s.env, AWS_ENDPOINT_URL_S3: p.endpoint }),
});

export const proxiedAzurite: ProxiedServer = {
  start: startAzurite,
  target: (s) => /BlobEndpoint=(http:\/\/[^/;]+)/.exec(s.env.AZURE_STORAGE_CONNECTION_STRING!)![1]!,
  via: (_s, p) => ({ AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(p.port) }),
};

export const proxiedGcs: ProxiedServer = {
  start: startGcs,
  target: (s) => s.env.STORAGE_EMULATOR_HOST!,
  via: (s, p) => ({ ...s.env, STORAGE_EMULATOR_HOST: p.endpoint }),
};

/** Starts `kind`'s server and a fault proxy in front of it, and opens both storages with `tuning`. */
export async function startProxied(kind: ProxiedServer, tuning: StorageTuning): Promise<ProxiedStorage> {
  const server = await kind.start();
  const proxy = await startFaultProxy(kind.target(server)).catch(async (error) => {
    await server.stop();
    throw error;
  });
  const env = (extra: Record<string, string>) => ({ ...process.env, ...extra });
  return {
    server,
    proxy,
    storage: openStorage(server.url, env(kind.via(server, proxy)), process.cwd(), tuning),
    direct: openStorage(server.url, env(server.env), process.cwd(), tuning),
    async stop() {
      await proxy.stop();
      await server.stop();
    },
  };
}
