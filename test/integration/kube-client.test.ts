/**
 * shared/k8s/client.ts behaves as kubectl does, against real local servers (an HTTPS and an
 * HTTP API server, an HTTP CONNECT proxy and a SOCKS5 proxy started here, and a real exec
 * credential plugin): KUBECONFIG's files merged, exec credentials renewed when they expire
 * (and after a 401) without running the plugin per request, 429 / Retry-After waited out,
 * proxy-url and HTTPS_PROXY / NO_PROXY honoured. The merge, an exec plugin and proxy-url are
 * also proven on the real control plane (test/harness/kube-cluster.ts) when it is built.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { UserError } from '../../shared/errors.ts';
import { KubeClient, KubeError } from '../../shared/k8s/client.ts';
import { proxyFromEnvironment } from '../../shared/k8s/proxy.ts';
import { type KubeCluster, kubeBinaries, startKubeCluster } from '../harness/kube-cluster.ts';
import { tempDir } from '../harness/servers.ts';

const exec = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let work: string;
let pki: { ca: string; caPem: Buffer; key: Buffer; cert: Buffer };

/** Runs `fn` with these environment variables (undefined: unset), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  set(vars);
  try {
    return await fn();
  } finally {
    set(saved);
  }
}

/** None of the machine's own proxy or cluster settings leak into these tests. */
const clean = {
  KUBECONFIG: undefined,
  HTTPS_PROXY: undefined,
  https_proxy: undefined,
  HTTP_PROXY: undefined,
  http_proxy: undefined,
  NO_PROXY: undefined,
  no_proxy: undefined,
  KUBERNETES_SERVICE_HOST: undefined,
};

async function makePki(dir: string) {
  const ssl = (args: string) => exec('openssl', args.split(' '), { cwd: dir });
  const ec = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
  await ssl(`req -x509 ${ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=kube-client-test-ca`);
  await ssl(`req ${ec} -keyout server.key -out server.csr -subj /CN=kube.test`);
  await fs.writeFile(
    path.join(dir, 'server.ext'),
    'subjectAltName=DNS:kube.test,DNS:localhost,IP:127.0.0.1\n',
  );
  await ssl(
    'x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt',
  );
  return {
    ca: path.join(dir, 'ca.crt'),
    caPem: await fs.readFile(path.join(dir, 'ca.crt')),
    key: await fs.readFile(path.join(dir, 'server.key')),
    cert: await fs.readFile(path.join(dir, 'server.crt')),
  };
}

interface Seen {
  method: string;
  path: string;
  authorization?: string;
  host?: string;
  code: number;
}

interface Scripted {
  code: number;
  headers?: Record<string, string>;
}

/**
 * A small API server: bearer tokens are checked (static ones, and the exec plugin's
 * `exec-N-EXPIRY`, refused once EXPIRY has passed or when revoked), `script` holds answers
 * given in turn to a path before the normal one.
 */
async function startApi(options: { tls: boolean }) {
  const seen: Seen[] = [];
  const tokens = new Set<string>();
  const revoked = new Set<string>();
  const script = new Map<string, Scripted[]>();
  const valid = (auth: string | undefined) => {
    const token = auth?.replace(/^Bearer /, '');
    if (!token || revoked.has(token)) return false;
    if (tokens.has(token)) return true;
    if (token.split('.').length === 3) {
      const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as {
        iss: string;
        exp: number;
      };
      return claims.iss.startsWith('https://127.0.0.1:') && claims.exp * 1000 > Date.now();
    }
    const m = /^exec-\d+-(\d+)$/.exec(token);
    return Boolean(m && Number(m[1]) > Date.now());
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const answer = (code: number, body: unknown, headers: Record<string, string> = {}) => {
        seen.push({
          method: req.method ?? '',
          path: url.pathname,
          authorization: req.headers.authorization,
          host: req.headers.host,
          code,
        });
        res.writeHead(code, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(body));
      };
      const status = (code: number, reason: string, message: string) => ({
        kind: 'Status',
        apiVersion: 'v1',
        status: 'Failure',
        reason,
        message,
        code,
      });
      if (!valid(req.headers.authorization)) return answer(401, status(401, 'Unauthorized', 'Unauthorized'));
      const next = script.get(url.pathname)?.shift();
      if (next)
        return answer(next.code, status(next.code, next.code === 429 ? 'TooManyRequests' : 'Busy', 'later'), {
          ...next.headers,
        });
      if (req.method === 'POST') return answer(201, JSON.parse(Buffer.concat(chunks).toString() || '{}'));
      answer(200, { kind: 'APIVersions', versions: ['v1'], path: url.pathname });
    });
  };
  const server = options.tls
    ? https.createServer({ key: pki.key, cert: pki.cert }, handler)
    : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const scheme = options.tls ? 'https' : 'http';
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    /** The same server under a name only the proxies resolve. */
    named: `${scheme}://kube.test:${port}`,
    port,
    seen,
    tokens,
    revoked,
    script,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
type Api = Awaited<ReturnType<typeof startApi>>;

/** Where the proxies send `kube.test`: here. */
const resolve = (host: string) => (host === 'kube.test' ? '127.0.0.1' : host);

/**
 * An HTTP proxy: CONNECT tunnels and absolute-URI requests, with an optional user and password
 * (Proxy-Authorization), recording what it was asked.
 */
async function startHttpProxy(credentials?: string) {
  // `credentials` as in a URL (user:password, percent-encoded); the proxy expects them decoded.
  const seen: { method: string; target: string; authorized: boolean }[] = [];
  const sockets = new Set<net.Socket>();
  const expected = credentials && `Basic ${Buffer.from(decodeURIComponent(credentials)).toString('base64')}`;
  const server = http.createServer((req, res) => {
    const authorized = !expected || req.headers['proxy-authorization'] === expected;
    seen.push({ method: req.method ?? '', target: req.url ?? '', authorized });
    if (!authorized) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' });
      res.end();
      return;
    }
    const url = new URL(req.url ?? '');
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const upstream = http.request(
      {
        host: resolve(url.hostname),
        port: url.port,
        path: url.pathname + url.search,
        method: req.method,
        headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const authorized = !expected || req.headers['proxy-authorization'] === expected;
    seen.push({ method: 'CONNECT', target: req.url ?? '', authorized });
    if (!authorized) {
      socket.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n');
      return;
    }
    const at = (req.url ?? '').lastIndexOf(':');
    const upstream = net.connect(
      Number((req.url ?? '').slice(at + 1)),
      resolve((req.url ?? '').slice(0, at)),
    );
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.once('connect', () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://${credentials ? `${credentials}@` : ''}127.0.0.1:${port}`,
    port,
    seen,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A SOCKS5 proxy (no authentication, CONNECT only), recording the destinations. */
async function startSocksProxy() {
  const seen: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.once('data', (hello: Buffer) => {
      if (hello[0] !== 5) return client.destroy();
      client.write(Buffer.from([5, 0]));
      client.once('data', (request: Buffer) => {
        let host: string;
        let at: number;
        if (request[3] === 1) {
          host = [...request.subarray(4, 8)].join('.');
          at = 8;
        } else if (request[3] === 3) {
          const n = request[4]!;
          host = request.subarray(5, 5 + n).toString();
          at = 5 + n;
        } else return client.destroy();
        const port = request.readUInt16BE(at);
        seen.push(`${host}:${port}`);
        const upstream = net.connect(port, resolve(host), () => {
          client.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]));
          upstream.pipe(client);
          client.pipe(upstream);
        });
        sockets.add(upstream);
        upstream.on('close', () => sockets.delete(upstream));
        upstream.on('error', () => client.destroy());
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `socks5://127.0.0.1:${port}`,
    seen,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

interface ClusterEntry {
  server: string;
  ca?: string;
  proxy?: string;
}

/** A kubeconfig file from plain parts. */
async function kubeconfig(
  file: string,
  parts: {
    clusters?: Record<string, ClusterEntry>;
    users?: Record<string, Record<string, unknown>>;
    contexts?: Record<string, [cluster: string, user: string]>;
    current?: string;
  },
): Promise<string> {
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: Object.entries(parts.clusters ?? {}).map(([name, c]) => ({
      name,
      cluster: {
        server: c.server,
        ...(c.ca ? { 'certificate-authority': c.ca } : {}),
        ...(c.proxy ? { 'proxy-url': c.proxy } : {}),
      },
    })),
    users: Object.entries(parts.users ?? {}).map(([name, user]) => ({ name, user })),
    contexts: Object.entries(parts.contexts ?? {}).map(([name, [cluster, user]]) => ({
      name,
      context: { cluster, user },
    })),
    ...(parts.current ? { 'current-context': parts.current } : {}),
  };
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, YAML.stringify(doc), { mode: 0o600 });
  return file;
}

/** A one-cluster, one-user kubeconfig. */
function single(file: string, cluster: ClusterEntry, user: Record<string, unknown>): Promise<string> {
  return kubeconfig(file, {
    clusters: { c: cluster },
    users: { u: user },
    contexts: { ctx: ['c', 'u'] },
    current: 'ctx',
  });
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a failure');
}

/**
 * The exec credential plugin: a shell script (run by a relative path, resolved from its
 * kubeconfig's folder) that starts node on a script. Each run appends a line to `runs` with
 * KUBERNETES_EXEC_INFO, and prints a token valid for `lifetimeMs` (`mode` fail: exits 1 with a
 * message; garbage: prints a bare secret, no JSON).
 */
async function execPlugin(dir: string, name: string) {
  const runs = path.join(dir, `${name}.runs`);
  await fs.mkdir(path.join(dir, 'bin'), { recursive: true });
  const script = path.join(dir, 'bin', `${name}.cjs`);
  await fs.writeFile(
    script,
    `const fs = require('node:fs');
const [runs, lifetime, mode] = process.argv.slice(2);
fs.appendFileSync(runs, (process.env.KUBERNETES_EXEC_INFO || '-') + '\\n');
const n = fs.readFileSync(runs, 'utf8').split('\\n').filter(Boolean).length;
if (mode === 'fail') { process.stderr.write('no session: log in first\\n'); process.exit(1); }
if (mode === 'garbage') { process.stdout.write('garbage-secret-7f3a'); process.exit(0); }
const expires = Date.now() + Number(lifetime);
const token = mode && mode.startsWith('token=') ? mode.slice(6) : 'exec-' + n + '-' + expires;
process.stdout.write(JSON.stringify({
  apiVersion: 'client.authentication.k8s.io/v1beta1',
  kind: 'ExecCredential',
  status: { token, expirationTimestamp: new Date(expires).toISOString() },
}));
`,
  );
  const wrapper = path.join(dir, 'bin', name);
  await fs.writeFile(wrapper, `#!/bin/sh\nexec '${process.execPath}' '${script}' "$@"\n`, { mode: 0o755 });
  return {
    /** The kubeconfig's `exec` entry, its command relative to `dir`. */
    user: (lifetimeMs: number, mode?: string) => ({
      exec: {
        apiVersion: 'client.authentication.k8s.io/v1beta1',
        command: `./bin/${name}`,
        args: [runs, String(lifetimeMs), ...(mode ? [mode] : [])],
        provideClusterInfo: true,
        interactiveMode: 'Never',
      },
    }),
    runs: async () => {
      try {
        return (await fs.readFile(runs, 'utf8')).split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
  };
}

let httpsApi: Api;
let httpApi: Api;

before(async () => {
  work = await tempDir('kube-client');
  pki = await makePki(work);
  httpsApi = await startApi({ tls: true });
  httpApi = await startApi({ tls: false });
  for (const api of [httpsApi, httpApi]) api.tokens.add('token-a').add('token-b').add('token-c');
});
after(async () => {
  await httpsApi?.stop();
  await httpApi?.stop();
  if (work) await fs.rm(work, { recursive: true, force: true });
});

describe('KUBECONFIG with several files', () => {
  test('merged as kubectl merges: the first file to name a cluster, user or context, or to set current-context, wins', () =>
    withEnv(clean, async () => {
      const dir = path.join(work, 'merge');
      // b.yaml is in a folder of its own, its CA path relative to that folder.
      await fs.mkdir(path.join(dir, 'b'), { recursive: true });
      await fs.copyFile(pki.ca, path.join(dir, 'b', 'ca.crt'));
      const a = await kubeconfig(path.join(dir, 'a.yaml'), {
        clusters: { one: { server: httpsApi.url, ca: pki.ca } },
        users: { alice: { token: 'token-a' } },
        contexts: { first: ['one', 'alice'], shared: ['one', 'alice'] },
        current: 'first',
      });
      const b = await kubeconfig(path.join(dir, 'b', 'b.yaml'), {
        clusters: { one: { server: 'https://127.0.0.1:1' }, two: { server: httpsApi.named, ca: 'ca.crt' } },
        users: { alice: { token: 'wrong' }, bob: { token: 'token-b' } },
        contexts: { shared: ['two', 'bob'], second: ['two', 'bob'] },
        current: 'second',
      });
      const empty = path.join(dir, 'empty.yaml');
      await fs.writeFile(empty, '# nothing yet\n');
      const none = await kubeconfig(path.join(dir, 'none.yaml'), {
        clusters: { three: { server: httpApi.url } },
        users: { carol: { token: 'token-c' } },
        contexts: { third: ['three', 'carol'] },
      });
      const missing = path.join(dir, 'missing.yaml');
      const list = (...files: string[]) => files.join(path.delimiter);

      const tokens = (api: Api, n: number) => api.seen.slice(-n).map((s) => s.authorization);
      await withEnv({ KUBECONFIG: list(missing, a, b) }, async () => {
        const client = await KubeClient.open();
        assert.equal(client.server, httpsApi.url, "a's current-context, a's cluster `one`");
        await client.get('/api');
        assert.deepEqual(tokens(httpsApi, 1), ['Bearer token-a'], "a's user alice, not b's");
        await (await KubeClient.open(undefined, 'shared')).get('/api');
        assert.deepEqual(tokens(httpsApi, 1), ['Bearer token-a'], "a's context `shared`");
      });
      // `second` is only in b: its cluster (b's CA, relative to b's folder) and user. The
      // name kube.test resolves nowhere, so it goes through a proxy (HTTPS_PROXY).
      const proxy = await startHttpProxy();
      try {
        await withEnv({ KUBECONFIG: list(a, b), HTTPS_PROXY: proxy.url }, async () => {
          const client = await KubeClient.open(undefined, 'second');
          assert.equal(client.server, httpsApi.named);
          await client.get('/api');
          assert.deepEqual(tokens(httpsApi, 1), ['Bearer token-b']);
        });
      } finally {
        await proxy.stop();
      }
      // Empty files and files without current-context: the first file that sets it wins.
      await withEnv({ KUBECONFIG: list(empty, none, b, a) }, async () => {
        const client = await KubeClient.open(undefined, 'third');
        assert.equal(client.server, httpApi.url);
        await client.get('/api');
        assert.deepEqual(
          tokens(httpApi, 1),
          ['Bearer token-c'],
          'http without insecure-skip-tls-verify works',
        );
      });
      await withEnv({ KUBECONFIG: list(none, a, b) }, async () => {
        assert.equal(
          (await KubeClient.open()).server,
          httpsApi.url,
          "a's current-context, none.yaml has none",
        );
      });
      await withEnv({ KUBECONFIG: list(b, a) }, async () => {
        assert.equal((await KubeClient.open()).server, httpsApi.named, "b's current-context now");
      });
      // The kubeconfig input is one file, whatever KUBECONFIG says.
      await withEnv({ KUBECONFIG: list(a) }, async () => {
        assert.equal((await KubeClient.open(none, 'third')).server, httpApi.url);
        const notThere = await failure(KubeClient.open(none, 'first'));
        assert.match(notThere.message, /context: 'first' is not in the kubeconfig; it has: third/);
        const noFile = await failure(KubeClient.open(missing));
        assert.ok(noFile instanceof UserError);
        assert.match(noFile.message, /kubeconfig: no kubeconfig at .*missing\.yaml/);
      });
    }));

  test('no file of KUBECONFIG exists: a clear error naming them; a broken file is named without its content', () =>
    withEnv(clean, async () => {
      const dir = path.join(work, 'missing');
      const files = [path.join(dir, 'x.yaml'), path.join(dir, 'y.yaml')];
      await withEnv({ KUBECONFIG: files.join(path.delimiter) }, async () => {
        const error = await failure(KubeClient.open());
        assert.ok(error instanceof UserError);
        assert.match(
          error.message,
          /^kubeconfig: no kubeconfig at .*x\.yaml, .*y\.yaml \(KUBECONFIG\) and not running in a cluster/,
        );
      });
      await fs.mkdir(dir, { recursive: true });
      await fs.writeFile(files[1]!, 'users:\n- name: u\n  user:\n    token: secret-in-yaml-91c\n   bad: [\n');
      await withEnv({ KUBECONFIG: files.join(path.delimiter) }, async () => {
        const error = await failure(KubeClient.open());
        assert.ok(error instanceof UserError);
        assert.match(error.message, /kubeconfig: cannot read .*y\.yaml: not valid YAML/);
        assert.doesNotMatch(error.message, /secret-in-yaml/);
      });
    }));
});

describe('exec credential plugins', () => {
  test('the credential is cached until its expirationTimestamp, renewed after it, and once for concurrent requests', () =>
    withEnv(clean, async () => {
      const dir = path.join(work, 'exec');
      const plugin = await execPlugin(dir, 'renew');
      const lifetime = 1200;
      const file = await single(
        path.join(dir, 'kubeconfig'),
        { server: httpsApi.url, ca: pki.ca },
        plugin.user(lifetime),
      );
      const client = await KubeClient.open(file);
      const start = Date.now();
      const seenBefore = httpsApi.seen.length;
      let requests = 0;
      while (Date.now() - start < 3000) {
        await client.get('/api');
        requests++;
        await sleep(50);
      }
      const elapsed = Date.now() - start;
      const seen = httpsApi.seen.slice(seenBefore);
      const unauthorized = seen.filter((s) => s.code === 401).length;
      const runs = await plugin.runs();
      // A run at the start and one each time the token expired (a 401 for a token that expired
      // on its way is retried once with a fresh one, a run more).
      assert.ok(requests >= 20, `${requests} requests`);
      assert.ok(runs.length >= 2, `renewed after expiry: ${runs.length} runs`);
      assert.ok(
        runs.length <= Math.ceil(elapsed / lifetime) + 1 + unauthorized,
        `${runs.length} runs for ${requests} requests in ${elapsed} ms`,
      );
      // A request sent just before its token expires can arrive just after: at most one such
      // race per expiry, each retried with a fresh token (no request failed above).
      assert.ok(
        unauthorized <= Math.ceil(elapsed / lifetime),
        `${unauthorized} requests went out with an expired token in ${elapsed} ms`,
      );
      const tokens = new Set(seen.filter((s) => s.code === 200).map((s) => s.authorization));
      assert.ok(tokens.size >= 2, 'requests used renewed tokens');
      // client-go's KUBERNETES_EXEC_INFO, with the cluster (provideClusterInfo).
      const info = JSON.parse(runs[0]!) as {
        kind: string;
        spec: { interactive: boolean; cluster: { server: string } };
      };
      assert.equal(info.kind, 'ExecCredential');
      assert.equal(info.spec.interactive, false);
      assert.equal(info.spec.cluster.server, httpsApi.url);

      // Concurrent requests once the token expired: one run between them.
      await sleep(lifetime + 50);
      const before = (await plugin.runs()).length;
      await Promise.all(Array.from({ length: 10 }, () => client.get('/api')));
      assert.equal((await plugin.runs()).length, before + 1);
    }));

  test('a 401 (the token revoked before its expiry) is retried once with a fresh credential', () =>
    withEnv(clean, async () => {
      const dir = path.join(work, 'exec-401');
      const plugin = await execPlugin(dir, 'revoke');
      const file = await single(
        path.join(dir, 'kubeconfig'),
        { server: httpsApi.url, ca: pki.ca },
        plugin.user(600_000),
      );
      const client = await KubeClient.open(file);
      await client.get('/api');
      await client.get('/api');
      assert.equal((await plugin.runs()).length, 1, 'cached: one run for two requests');
      httpsApi.revoked.add(httpsApi.seen.at(-1)!.authorization!.replace('Bearer ', ''));
      const mark = httpsApi.seen.length;
      await client.get('/api');
      assert.deepEqual(
        httpsApi.seen.slice(mark).map((s) => s.code),
        [401, 200],
      );
      assert.equal((await plugin.runs()).length, 2);

      // A plugin whose token the server never takes: run again, then the 401, no token in it.
      const stale = await execPlugin(dir, 'stale');
      const staleFile = await single(
        path.join(dir, 'stale.kubeconfig'),
        { server: httpsApi.url, ca: pki.ca },
        stale.user(600_000, 'token=never-valid-5e1d'),
      );
      const at = httpsApi.seen.length;
      const error = await failure((await KubeClient.open(staleFile)).get('/api'));
      assert.ok(error instanceof KubeError);
      assert.equal(error.code, 401);
      assert.doesNotMatch(error.message, /never-valid/);
      assert.equal((await stale.runs()).length, 2, 'the plugin is run again after the 401');
      assert.equal(httpsApi.seen.length - at, 1, 'it gave the same token: no point in sending it again');
    }));

  test('a static token that is refused is not retried, and appears in no message', () =>
    withEnv(clean, async () => {
      const file = await single(
        path.join(work, 'static', 'kubeconfig'),
        { server: httpsApi.url, ca: pki.ca },
        { token: 'static-refused-22b8' },
      );
      const at = httpsApi.seen.length;
      const error = await failure((await KubeClient.open(file)).get('/api'));
      assert.ok(error instanceof KubeError);
      assert.equal(error.code, 401);
      assert.equal(httpsApi.seen.length - at, 1);
      assert.doesNotMatch(`${error.message} ${error.stack}`, /static-refused/);
    }));

  test('a plugin that fails or prints no ExecCredential: a UserError with its message, never its output', () =>
    withEnv(clean, async () => {
      const dir = path.join(work, 'exec-fail');
      const plugin = await execPlugin(dir, 'broken');
      const failing = await single(
        path.join(dir, 'fail'),
        { server: httpsApi.url, ca: pki.ca },
        plugin.user(1000, 'fail'),
      );
      const error = await failure((await KubeClient.open(failing)).get('/api'));
      assert.ok(error instanceof UserError);
      assert.match(
        error.message,
        /user 'u': the exec credential plugin .*broken gave no credentials: no session: log in first/,
      );
      const garbage = await single(
        path.join(dir, 'garbage'),
        { server: httpsApi.url, ca: pki.ca },
        plugin.user(1000, 'garbage'),
      );
      const noJson = await failure((await KubeClient.open(garbage)).get('/api'));
      assert.ok(noJson instanceof UserError);
      assert.match(noJson.message, /printed no ExecCredential JSON/);
      assert.doesNotMatch(noJson.message, /garbage-secret/);
    }));
});

/**
 * An OIDC issuer: discovery and a token endpoint that trades the last refresh token it gave
 * for a new id-token (a JWT living `state.lifetimeS`) and refresh token; `refuse` makes it say
 * invalid_grant.
 */
async function startIssuer(lifetimeS: number) {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const state = { url: '', refreshes: 0, refresh: 'refresh-0', refuse: false, lifetimeS };
  const jwt = (exp: number) =>
    `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64({ iss: state.url, aud: 'kube', sub: 'me', exp, jti: state.refreshes })}.c2lnbmF0dXJl`;
  const server = https.createServer({ key: pki.key, cert: pki.cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/.well-known/openid-configuration')
        return res.end(JSON.stringify({ issuer: state.url, token_endpoint: `${state.url}/token` }));
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      if (
        req.url !== '/token' ||
        state.refuse ||
        form.get('grant_type') !== 'refresh_token' ||
        form.get('client_id') !== 'kube' ||
        form.get('refresh_token') !== state.refresh
      ) {
        res.statusCode = 400;
        return res.end(
          JSON.stringify({ error: 'invalid_grant', error_description: `not ${form.get('refresh_token')}` }),
        );
      }
      state.refreshes++;
      state.refresh = `refresh-${state.refreshes}`;
      res.end(
        JSON.stringify({
          id_token: jwt(Math.floor(Date.now() / 1000) + state.lifetimeS),
          refresh_token: state.refresh,
          token_type: 'Bearer',
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    state,
    /** An id-token that expired a minute ago. */
    expired: () => jwt(Math.floor(Date.now() / 1000) - 60),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('OIDC auth-provider', () => {
  test('the id-token is refreshed with the refresh token when it expires, and after a 401; a refused refresh is a UserError', () =>
    withEnv(clean, async () => {
      // client-go refreshes 10 s before exp: a token of 12 s is used for about 2 s.
      const issuer = await startIssuer(12);
      try {
        const file = await single(
          path.join(work, 'oidc', 'kubeconfig'),
          { server: httpsApi.url, ca: pki.ca },
          {
            'auth-provider': {
              name: 'oidc',
              config: {
                'client-id': 'kube',
                'idp-issuer-url': issuer.state.url,
                'idp-certificate-authority': pki.ca,
                'id-token': issuer.expired(),
                'refresh-token': 'refresh-0',
              },
            },
          },
        );
        const client = await KubeClient.open(file);
        const mark = httpsApi.seen.length;
        const start = Date.now();
        let requests = 0;
        while (Date.now() - start < 3500) {
          await client.get('/api');
          requests++;
          await sleep(100);
        }
        const seen = httpsApi.seen.slice(mark);
        assert.ok(seen.every((s) => s.code === 200));
        assert.ok(
          issuer.state.refreshes >= 2 && issuer.state.refreshes <= 4,
          `${issuer.state.refreshes} refreshes for ${requests} requests`,
        );
        assert.equal(new Set(seen.map((s) => s.authorization)).size, issuer.state.refreshes);

        // Tokens of an hour from the next refresh on: the 401 below is the revocation's, not expiry's.
        issuer.state.lifetimeS = 3600;
        while (issuer.state.refreshes === new Set(seen.map((s) => s.authorization)).size) {
          await client.get('/api');
          await sleep(100);
        }
        const before = issuer.state.refreshes;
        httpsApi.revoked.add(httpsApi.seen.at(-1)!.authorization!.replace('Bearer ', ''));
        const at = httpsApi.seen.length;
        await client.get('/api');
        assert.deepEqual(
          httpsApi.seen.slice(at).map((s) => s.code),
          [401, 200],
        );
        assert.equal(issuer.state.refreshes, before + 1);

        httpsApi.revoked.add(httpsApi.seen.at(-1)!.authorization!.replace('Bearer ', ''));
        issuer.state.refuse = true;
        const error = await failure(client.get('/api'));
        assert.ok(error instanceof UserError);
        assert.match(
          error.message,
          /user 'u': cannot refresh the OIDC id-token \(the server refused it\): the token endpoint answered 400 \(invalid_grant\)/,
        );
        assert.doesNotMatch(error.message, /refresh-\d/);
      } finally {
        await issuer.stop();
      }
    }));
});

describe('429 and Retry-After', () => {
  let client: KubeClient;
  before(async () => {
    const file = await single(
      path.join(work, 'retry', 'kubeconfig'),
      { server: httpsApi.url, ca: pki.ca },
      { token: 'token-a' },
    );
    client = await withEnv(clean, () => KubeClient.open(file));
  });
  const answers = (p: string) => httpsApi.seen.filter((s) => s.path === p).map((s) => s.code);
  const busy = (code: number, retryAfter?: string): Scripted => ({
    code,
    headers: retryAfter === undefined ? {} : { 'retry-after': retryAfter },
  });

  test('429 with Retry-After is waited out and retried, for a POST too', async () => {
    httpsApi.script.set('/r/get', [busy(429, '1'), busy(429, '1')]);
    const start = Date.now();
    await client.get('/r/get');
    const waited = Date.now() - start;
    assert.deepEqual(answers('/r/get'), [429, 429, 200]);
    assert.ok(waited >= 1900 && waited < 4000, `waited ${waited} ms for two Retry-After: 1`);

    httpsApi.script.set('/r/post', [busy(429, '0')]);
    assert.deepEqual(await client.request('POST', '/r/post', { a: 1 }), { a: 1 });
    assert.deepEqual(answers('/r/post'), [429, 201]);
  });

  test('a 5xx with Retry-After: an idempotent request is retried, a POST is not; no Retry-After, no retry', async () => {
    httpsApi.script.set('/r/503', [busy(503, '0'), busy(500, '0')]);
    await client.get('/r/503');
    assert.deepEqual(answers('/r/503'), [503, 500, 200]);

    httpsApi.script.set('/r/post503', [busy(503, '0')]);
    const post = await failure(client.request('POST', '/r/post503', {}));
    assert.ok(post instanceof KubeError);
    assert.equal(post.code, 503);
    assert.deepEqual(answers('/r/post503'), [503]);

    httpsApi.script.set('/r/bare', [busy(429)]);
    const bare = await failure(client.get('/r/bare'));
    assert.ok(bare instanceof KubeError);
    assert.equal(bare.code, 429);
    assert.deepEqual(answers('/r/bare'), [429]);
  });

  test('bounded: at most maxRetries retries, at most retryBudgetMs of waiting; the signal ends a wait', async () => {
    const file = await single(
      path.join(work, 'retry', 'bounded'),
      { server: httpsApi.url, ca: pki.ca },
      { token: 'token-a' },
    );
    const bounded = await withEnv(clean, () =>
      KubeClient.open(file, undefined, { maxRetries: 3, retryBudgetMs: 800 }),
    );
    httpsApi.script.set(
      '/r/always',
      Array.from({ length: 10 }, () => busy(429, '0')),
    );
    const always = await failure(bounded.get('/r/always'));
    assert.ok(always instanceof KubeError);
    assert.equal(always.code, 429);
    assert.match(always.message, /after 3 retries/);
    assert.deepEqual(answers('/r/always'), [429, 429, 429, 429]);

    // Retry-After: 3600 is cut to what is left of the budget: one retry after 0.8 s, then the error.
    httpsApi.script.set('/r/long', [busy(429, '3600'), busy(429, '3600')]);
    const start = Date.now();
    const long = await failure(bounded.get('/r/long'));
    const waited = Date.now() - start;
    assert.ok(long instanceof KubeError);
    assert.deepEqual(answers('/r/long'), [429, 429]);
    assert.ok(waited >= 700 && waited < 2500, `waited ${waited} ms`);

    // The default client (60 s budget) waits 30 s, unless the signal ends it.
    httpsApi.script.set('/r/abort', [busy(429, '30')]);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stopped by the test')), 300);
    const t0 = Date.now();
    const aborted = await failure(client.get('/r/abort', controller.signal));
    assert.equal(aborted.message, 'stopped by the test');
    assert.ok(Date.now() - t0 < 2000);
    assert.deepEqual(answers('/r/abort'), [429]);
    httpsApi.script.clear();
  });
});

describe('proxies', () => {
  test('proxy-url: a CONNECT tunnel for an https server, with the proxy user; absolute URIs for an http server', () =>
    withEnv(clean, async () => {
      const proxy = await startHttpProxy('pxuser:px%20secret');
      try {
        const dir = path.join(work, 'proxy');
        // kube.test resolves only at the proxy: the requests cannot have gone around it.
        const tunnelled = await single(
          path.join(dir, 'https'),
          { server: httpsApi.named, ca: pki.ca, proxy: proxy.url },
          { token: 'token-a' },
        );
        const client = await KubeClient.open(tunnelled);
        await client.get('/api');
        assert.deepEqual(await client.request('POST', '/api/v1/namespaces', { x: 1 }), { x: 1 });
        assert.deepEqual(
          proxy.seen.map((s) => [s.method, s.target, s.authorized]),
          [
            ['CONNECT', `kube.test:${httpsApi.port}`, true],
            ['CONNECT', `kube.test:${httpsApi.port}`, true],
          ],
        );
        assert.equal(httpsApi.seen.at(-1)?.host, `kube.test:${httpsApi.port}`);

        proxy.seen.length = 0;
        const plain = await single(
          path.join(dir, 'http'),
          { server: httpApi.named, proxy: proxy.url },
          { token: 'token-b' },
        );
        await (await KubeClient.open(plain)).get('/api/v1/pods?limit=1');
        assert.deepEqual(proxy.seen, [
          { method: 'GET', target: `http://kube.test:${httpApi.port}/api/v1/pods?limit=1`, authorized: true },
        ]);
        assert.equal(httpApi.seen.at(-1)?.authorization, 'Bearer token-b');

        // The wrong proxy password: the proxy's 407, named without the password.
        const wrong = await single(
          path.join(dir, 'wrong'),
          { server: httpsApi.named, ca: pki.ca, proxy: proxy.url.replace('px%20secret', 'nope-4411') },
          { token: 'token-a' },
        );
        const refused = await failure((await KubeClient.open(wrong)).get('/api'));
        assert.ok(refused instanceof UserError);
        assert.match(
          refused.message,
          new RegExp(
            `cannot reach the API server .* through the proxy http://127\\.0\\.0\\.1:${proxy.port} \\(the proxy answered 407`,
          ),
        );
        assert.doesNotMatch(refused.message, /nope-4411|pxuser/);
      } finally {
        await proxy.stop();
      }
    }));

  test('proxy-url socks5:// (through @kubernetes/client-node agent)', () =>
    withEnv(clean, async () => {
      const socks = await startSocksProxy();
      try {
        const file = await single(
          path.join(work, 'socks', 'kubeconfig'),
          { server: httpsApi.url, ca: pki.ca, proxy: socks.url },
          { token: 'token-a' },
        );
        await (await KubeClient.open(file)).get('/api');
        assert.deepEqual(socks.seen, [`127.0.0.1:${httpsApi.port}`]);
      } finally {
        await socks.stop();
      }
    }));

  test('HTTPS_PROXY and HTTP_PROXY when the cluster has no proxy-url; never for loopback servers', () =>
    withEnv(clean, async () => {
      const proxy = await startHttpProxy();
      try {
        const dir = path.join(work, 'env-proxy');
        const named = await single(
          path.join(dir, 'named'),
          { server: httpsApi.named, ca: pki.ca },
          { token: 'token-a' },
        );
        const loopback = await single(
          path.join(dir, 'loopback'),
          { server: httpsApi.url, ca: pki.ca },
          { token: 'token-a' },
        );
        const plain = await single(path.join(dir, 'plain'), { server: httpApi.named }, { token: 'token-a' });
        await withEnv({ https_proxy: proxy.url, HTTP_PROXY: proxy.url }, async () => {
          await (await KubeClient.open(named)).get('/api');
          await (await KubeClient.open(loopback)).get('/api');
          await (await KubeClient.open(plain)).get('/api');
        });
        assert.deepEqual(
          proxy.seen.map((s) => `${s.method} ${s.target}`),
          [`CONNECT kube.test:${httpsApi.port}`, `GET http://kube.test:${httpApi.port}/api`],
        );
      } finally {
        await proxy.stop();
      }
    }));

  test("NO_PROXY is read as Go's net/http reads it", () => {
    const at = (url: string, env: NodeJS.ProcessEnv) => proxyFromEnvironment(new URL(url), env)?.href;
    const P = 'http://proxy.corp:3128/';
    const env = (noProxy?: string) => ({ HTTPS_PROXY: 'proxy.corp:3128', NO_PROXY: noProxy });
    assert.equal(at('https://kube.example.com', env()), P, 'no scheme: http://');
    assert.equal(at('http://kube.example.com', env()), undefined, 'HTTPS_PROXY is for https only');
    assert.equal(at('https://kube.example.com', { https_proxy: P }), P);
    assert.equal(at('https://localhost:6443', env()), undefined);
    assert.equal(at('https://127.0.0.9:6443', env()), undefined);
    assert.equal(at('https://[::1]:6443', env()), undefined);
    assert.equal(
      at('https://kube.example.com', env('example.com')),
      undefined,
      'a domain and its subdomains',
    );
    assert.equal(at('https://example.com', env('example.com')), undefined);
    assert.equal(at('https://notexample.com', env('example.com')), P);
    assert.equal(at('https://example.com', env('.example.com')), P, 'a leading dot: subdomains only');
    assert.equal(at('https://a.example.com', env('*.example.com')), undefined);
    assert.equal(at('https://10.1.2.3:6443', env('10.0.0.0/8')), undefined, 'CIDR');
    assert.equal(at('https://11.1.2.3:6443', env('10.0.0.0/8')), P);
    assert.equal(at('https://10.1.2.3:6443', env('10.1.2.3:443')), P, 'another port');
    assert.equal(at('https://10.1.2.3', env('10.1.2.3:443')), undefined, 'the default port');
    assert.equal(at('https://[fd00::1]:6443', env('fd00::/8')), undefined);
    assert.equal(at('https://kube.example.com:6443', env('other.org, kube.example.com:6443')), undefined);
    assert.equal(at('https://anything.org', env('*')), undefined);
    assert.throws(
      () => at('https://kube.example.com', { HTTPS_PROXY: 'socks5://p:1080' }),
      /HTTPS_PROXY: .*http:\/\/ and https:\/\//,
    );
  });
});

describe('the real control plane', () => {
  const found = kubeBinaries();
  if (!found.binaries) console.log(`# kube-client: the real-control-plane test is skipped: ${found.reason}`);
  let cluster: KubeCluster;
  before(async () => {
    if (found.binaries) cluster = await startKubeCluster();
  });
  after(() => cluster?.stop());

  test(
    "KUBECONFIG merge, an exec plugin giving the admin's token, and proxy-url, on kube-apiserver",
    { skip: found.binaries ? false : found.reason },
    () =>
      withEnv(clean, async () => {
        const dir = path.join(work, 'real');
        const plugin = await execPlugin(dir, 'admin');
        const proxy = await startHttpProxy();
        try {
          const extra = await kubeconfig(path.join(dir, 'extra.yaml'), {
            clusters: {
              'lifeboat-test': { server: 'https://127.0.0.1:1' },
              proxied: { server: cluster.server, ca: cluster.caFile, proxy: proxy.url },
            },
            users: {
              admin: { token: 'not-the-token' },
              plugged: plugin.user(600_000, `token=${cluster.token}`),
            },
            contexts: { 'via-proxy': ['proxied', 'plugged'] },
            current: 'via-proxy',
          });
          const missing = path.join(dir, 'missing.yaml');
          // The harness's admin kubeconfig first: its cluster, user and current-context win.
          await withEnv(
            { KUBECONFIG: [missing, cluster.kubeconfig, extra].join(path.delimiter) },
            async () => {
              const direct = await KubeClient.open();
              assert.equal(direct.server, cluster.server);
              const ns = await direct.get<{ metadata: { name: string } }>('/api/v1/namespaces/default');
              assert.equal(ns.metadata.name, 'default');
              assert.equal(proxy.seen.length, 0);

              const proxied = await KubeClient.open(undefined, 'via-proxy');
              const list = await proxied.get<{ items: unknown[] }>('/api/v1/namespaces?limit=1');
              assert.equal(list.items.length, 1);
              assert.deepEqual(
                proxy.seen.map((s) => `${s.method} ${s.target}`),
                [`CONNECT ${new URL(cluster.server).host}`],
              );
              assert.equal((await plugin.runs()).length, 1);
            },
          );
        } finally {
          await proxy.stop();
        }
      }),
  );
});
