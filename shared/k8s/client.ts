/**
 * The Kubernetes API client: KubeError, and KubeClient's requests with raw JSON, their
 * credentials (renewed as they expire and once after a 401), and the retries of 429 and
 * Retry-After answers. The kubeconfig comes from kubeconfig.ts, OIDC tokens from oidc.ts and
 * proxies from proxy.ts.
 */
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Cluster, Context, KubeConfig, User } from '@kubernetes/client-node';
import { messageOf, UserError } from '../errors.ts';
import { execUser, loadKubeconfig } from './kubeconfig.ts';
import { OidcTokens } from './oidc.ts';
import { clusterProxy, proxyAuthorization, proxyFromEnvironment, tunnel } from './proxy.ts';

/** A Kubernetes API error: the Status the server answered with. */
export class KubeError extends Error {
  override name = 'KubeError';
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, message: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

export interface KubeClientOptions {
  /**
   * How often one request is repeated when the server asks to try again later (429 Too Many
   * Requests, or a 5xx with Retry-After for an idempotent method); client-go's default, 10.
   */
  maxRetries?: number;
  /** The most one request waits in all for those Retry-After answers, in ms; 60 s. */
  retryBudgetMs?: number;
}

/** What authenticates one request: headers, the TLS material, and (SOCKS proxy) the agent. */
interface Credentials {
  generation: number;
  headers: Record<string, string>;
  tls: TlsMaterial;
  /** The agent @kubernetes/client-node made for a socks proxy-url. */
  agent?: http.Agent;
}

interface TlsMaterial {
  ca?: string | Buffer | (string | Buffer)[];
  cert?: string | Buffer | (string | Buffer)[];
  key?: unknown;
  rejectUnauthorized?: boolean;
  servername?: string;
}

interface Answer {
  code: number;
  statusMessage: string;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** Methods whose repetition does no harm, so a 5xx with Retry-After may be retried. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * Talks to the API server with raw JSON: objects come back exactly as the server sent them,
 * no field lost to typed models. Authentication (tokens, client certificates, exec plugins,
 * OIDC, in-cluster service accounts) comes from @kubernetes/client-node's KubeConfig and is
 * applied to each request, so credentials that expire are renewed during long runs. As kubectl
 * does, it merges the files of KUBECONFIG, honours the cluster's proxy-url (and HTTPS_PROXY,
 * HTTP_PROXY, NO_PROXY), and waits out 429 and Retry-After answers.
 */
export class KubeClient {
  readonly server: string;
  private auth: KubeConfig;
  private readonly makeAuth: () => KubeConfig;
  /** Exec plugins, auth providers and token files give credentials that change over time. */
  private readonly refreshable: boolean;
  /** The user's OIDC auth-provider, refreshed here (not by client-node: see OidcTokens). */
  private readonly oidc: OidcTokens | undefined;
  private readonly proxy: URL | undefined;
  private readonly maxRetries: number;
  private readonly retryBudgetMs: number;
  /** Bumped whenever the credentials are thrown away (a 401): the next ones are fetched anew. */
  private generation = 0;
  private fixed: Credentials | undefined;
  private pending: { generation: number; promise: Promise<Credentials> } | undefined;
  private agent: { tls: TlsMaterial; agent: http.Agent } | undefined;

  private constructor(
    server: string,
    makeAuth: () => KubeConfig,
    refreshable: boolean,
    oidc: OidcTokens | undefined,
    proxy: URL | undefined,
    options: KubeClientOptions,
  ) {
    this.server = server.replace(/\/$/, '');
    this.makeAuth = makeAuth;
    this.auth = makeAuth();
    this.refreshable = refreshable;
    this.oidc = oidc;
    this.proxy = proxy;
    this.maxRetries = options.maxRetries ?? 10;
    this.retryBudgetMs = options.retryBudgetMs ?? 60_000;
  }

  /**
   * From the kubeconfig kubectl would use (see loadKubeconfig): the `kubeconfig` file, else
   * KUBECONFIG's files merged, else ~/.kube/config, else in-cluster.
   */
  static async open(
    kubeconfig?: string,
    context?: string,
    options: KubeClientOptions = {},
  ): Promise<KubeClient> {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { cluster, user, userDir } = await loadKubeconfig(kubeconfig, context);
    const { proxy, socks } = clusterProxy(cluster);
    const oidc = user?.authProvider?.name === 'oidc' ? new OidcTokens(user) : undefined;
    let authUser: User = user ? execUser(user, cluster, userDir) : { name: 'anonymous' };
    if (oidc) authUser = { ...authUser, authProvider: undefined };
    // The KubeConfig that only authenticates: its cluster is the real one (CA, tls-server-name,
    // insecure-skip-tls-verify) but always https (client-node refuses plain http unless TLS
    // checks are off, which kubectl does not) and without an http proxy (that is ours). A
    // fresh one has fresh authenticators: no cached exec credential or token file.
    const authCluster: Cluster = {
      ...cluster,
      server: socks ? cluster.server : cluster.server.replace(/^http:/, 'https:'),
      proxyUrl: socks ? cluster.proxyUrl : undefined,
    };
    const authContext: Context = { name: 'lifeboat', cluster: cluster.name, user: authUser.name };
    const makeAuth = () => {
      const auth = new KubeConfig();
      auth.loadFromOptions({
        clusters: [authCluster],
        users: [authUser],
        contexts: [authContext],
        currentContext: authContext.name,
      });
      return auth;
    };
    const refreshable = Boolean(user?.exec || user?.authProvider);
    return new KubeClient(cluster.server, makeAuth, refreshable, oidc, proxy, options);
  }

  /**
   * One request; a non-2xx answer becomes a KubeError with the server's reason. A 401 is
   * retried once with fresh credentials when they can change (exec plugin, auth provider); a
   * 429 with Retry-After (any method: the server did not process it) and a 5xx with
   * Retry-After (idempotent methods only) are retried after that wait, at most `maxRetries`
   * times and `retryBudgetMs` in all.
   */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const url = new URL(this.server + path);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const deadline = Date.now() + this.retryBudgetMs;
    let retries = 0;
    let reauthenticated = false;
    for (;;) {
      const creds = await this.credentials();
      const answer = await this.send(method, url, payload, creds, signal);
      const { code } = answer;
      if (code >= 200 && code < 300) {
        try {
          return JSON.parse(answer.text) as T;
        } catch {
          throw new KubeError(code, 'BadResponse', `${method} ${path}: the server's answer is not JSON`);
        }
      }
      if (code === 401 && this.refreshable && !reauthenticated) {
        reauthenticated = true;
        if (await this.renewed(creds)) continue;
      }
      const wait = retryAfter(answer, method);
      const left = deadline - Date.now();
      if (wait !== undefined && retries < this.maxRetries && left > 0) {
        retries++;
        await pause(Math.min(wait, left), signal);
        continue;
      }
      let reason = answer.statusMessage || 'Error';
      let message = answer.text.slice(0, 300);
      try {
        const status = JSON.parse(answer.text) as { reason?: string; message?: string };
        reason = status.reason ?? reason;
        message = status.message ?? message;
      } catch {}
      const tries = retries ? ` (after ${retries} ${retries === 1 ? 'retry' : 'retries'})` : '';
      throw new KubeError(code, reason, `${method} ${path}: ${code} ${reason}: ${message}${tries}`);
    }
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', path, undefined, signal);
  }

  /**
   * The credentials for the next request. Fixed ones are computed once; others are re-applied
   * each time (client-node caches an exec credential until its expirationTimestamp and re-reads
   * token files each minute), one at a time, so concurrent requests never start an exec
   * plugin twice.
   */
  private credentials(): Promise<Credentials> {
    if (this.fixed) return Promise.resolve(this.fixed);
    if (this.pending?.generation !== this.generation) {
      const generation = this.generation;
      const promise = this.apply(generation);
      const pending = { generation, promise };
      this.pending = pending;
      promise
        .finally(() => {
          if (this.pending === pending) this.pending = undefined;
        })
        .catch(() => {});
    }
    return this.pending!.promise;
  }

  private async apply(generation: number): Promise<Credentials> {
    const opts: https.RequestOptions = { headers: {} };
    try {
      await this.auth.applyToHTTPSOptions(opts);
    } catch (error) {
      throw authError(error, this.auth.getCurrentUser());
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(opts.headers ?? {}))
      if (value !== undefined) headers[name.toLowerCase()] = String(value);
    if (opts.auth) headers.authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    if (this.oidc) headers.authorization = `Bearer ${await this.oidc.token()}`;
    const creds: Credentials = {
      generation,
      headers,
      tls: {
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        rejectUnauthorized: opts.rejectUnauthorized,
        servername: opts.servername,
      },
      agent: opts.agent && this.auth.getCurrentCluster()?.proxyUrl ? (opts.agent as http.Agent) : undefined,
    };
    if (!this.refreshable) this.fixed = creds;
    return creds;
  }

  /** After a 401: throws the credentials away and says whether the fresh ones differ. */
  private async renewed(sent: Credentials): Promise<boolean> {
    if (sent.generation === this.generation) {
      this.generation++;
      this.auth = this.makeAuth();
      this.oidc?.expire();
    }
    const fresh = await this.credentials();
    return (
      fresh.headers.authorization !== sent.headers.authorization ||
      !same(fresh.tls.cert, sent.tls.cert) ||
      !same(fresh.tls.key, sent.tls.key)
    );
  }

  /** The agent for direct requests, made anew only when the TLS material changes. */
  private agentFor(url: URL, creds: Credentials): http.Agent {
    if (creds.agent) return creds.agent;
    const t = creds.tls;
    const current = this.agent;
    if (
      current &&
      same(current.tls.ca, t.ca) &&
      same(current.tls.cert, t.cert) &&
      same(current.tls.key, t.key) &&
      current.tls.rejectUnauthorized === t.rejectUnauthorized &&
      current.tls.servername === t.servername
    )
      return current.agent;
    const agent = url.protocol === 'http:' ? new http.Agent() : new https.Agent(tlsOptions(t));
    this.agent = { tls: t, agent };
    return agent;
  }

  private async send(
    method: string,
    url: URL,
    payload: Buffer | undefined,
    creds: Credentials,
    signal: AbortSignal | undefined,
  ): Promise<Answer> {
    const headers: Record<string, string> = {
      ...creds.headers,
      accept: 'application/json',
      ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
    };
    const proxy = creds.agent ? undefined : (this.proxy ?? proxyFromEnvironment(url));
    // The proxy's origin: without its user and password.
    const via = proxy ? ` through the proxy ${proxy.origin}` : '';
    const unreachable = (error: Error) =>
      signal?.aborted
        ? error
        : error instanceof UserError
          ? error
          : new UserError(`kubeconfig: cannot reach the API server ${this.server}${via} (${error.message})`);
    let options: https.RequestOptions;
    let transport: typeof http | typeof https = url.protocol === 'http:' ? http : https;
    let target: URL | string = url;
    if (!proxy) options = { method, signal, headers, agent: this.agentFor(url, creds) };
    else if (url.protocol === 'http:') {
      // A plain-http server through a proxy: the request goes to the proxy with the absolute URI.
      transport = proxy.protocol === 'https:' ? https : http;
      target = proxy.href;
      options = {
        method,
        signal,
        path: url.href,
        headers: { ...headers, host: url.host, ...proxyAuthorization(proxy) },
        agent: false,
      };
    } else {
      let socket: Duplex;
      try {
        socket = await tunnel(proxy, url, tlsOptions(creds.tls), signal);
      } catch (error) {
        throw unreachable(error as Error);
      }
      options = { method, signal, headers, createConnection: () => socket };
    }
    return new Promise<Answer>((resolve, reject) => {
      const req = transport.request(target, options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            code: res.statusCode ?? 0,
            statusMessage: res.statusMessage ?? '',
            headers: res.headers,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      });
      req.on('error', (error) => reject(unreachable(error)));
      req.end(payload);
    });
  }
}

/** A failure to get credentials, named without anything the plugin printed on stdout (the secret). */
function authError(error: unknown, user: User | null): UserError {
  const exec = user?.exec as { command?: string; installHint?: string } | undefined;
  if (!exec)
    return new UserError(`kubeconfig: user '${user?.name}': cannot get credentials (${messageOf(error)})`);
  const code = (error as NodeJS.ErrnoException).code;
  const why =
    error instanceof SyntaxError
      ? 'it printed no ExecCredential JSON'
      : error instanceof TypeError
        ? 'its ExecCredential has no status'
        : code === 'ENOENT'
          ? `it is not installed${exec.installHint ? ` (${messageOf(exec.installHint)})` : ''}`
          : messageOf(error).slice(0, 500) || 'it failed';
  return new UserError(
    `kubeconfig: user '${user?.name}': the exec credential plugin ${exec.command} gave no credentials: ${why}`,
  );
}

function same(a: unknown, b: unknown): boolean {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
  return a === b;
}

function tlsOptions(t: TlsMaterial): https.AgentOptions {
  const out: https.AgentOptions = {};
  if (t.ca !== undefined) out.ca = t.ca;
  if (t.cert !== undefined) out.cert = t.cert;
  if (t.key !== undefined) out.key = t.key as https.AgentOptions['key'];
  if (t.rejectUnauthorized !== undefined) out.rejectUnauthorized = t.rejectUnauthorized;
  if (t.servername !== undefined) out.servername = t.servername;
  return out;
}

/** How long the server asked to wait before the request is repeated, or undefined: not to repeat. */
function retryAfter(answer: Answer, method: string): number | undefined {
  const { code } = answer;
  if (code !== 429 && !(code >= 500 && code <= 599 && IDEMPOTENT.has(method.toUpperCase()))) return undefined;
  const value = answer.headers['retry-after'];
  if (typeof value !== 'string') return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const aborted = () => {
      clearTimeout(timer);
      reject(signal?.reason ?? new Error('aborted'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', aborted);
      resolve();
    }, ms);
    if (signal?.aborted) aborted();
    else signal?.addEventListener('abort', aborted, { once: true });
  });
}
