import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Cluster, Context, KubeConfig, User } from '@kubernetes/client-node';
import { messageOf, UserError } from '../errors.ts';

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
   * From a kubeconfig file (the `kubeconfig` input, a single file), else the files of
   * KUBECONFIG merged as kubectl merges them (the first file to set a value wins; missing
   * files are skipped), else ~/.kube/config, or in-cluster when none exists and the pod has a
   * service account.
   */
  static async open(
    kubeconfig?: string,
    context?: string,
    options: KubeClientOptions = {},
  ): Promise<KubeClient> {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    const fromEnv = [...new Set((process.env.KUBECONFIG ?? '').split(path.delimiter).filter(Boolean))];
    const files = kubeconfig ? [kubeconfig] : fromEnv.length ? fromEnv : [`${process.env.HOME}/.kube/config`];
    const present = files.filter((file) => fs.existsSync(file));
    /** The folder of the file each user came from: an exec plugin's relative command is resolved there. */
    const userDirs = new Map<string, string>();
    if (present.length) loadMerged(kc, present, userDirs, () => new KubeConfig());
    else if (kubeconfig)
      throw new UserError(`kubeconfig: no kubeconfig at ${kubeconfig}; give the path of a kubeconfig file`);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else
      throw new UserError(
        `kubeconfig: no kubeconfig at ${files.join(', ')}${fromEnv.length ? ' (KUBECONFIG)' : ''} and not running in a cluster; give the kubeconfig input or set KUBECONFIG`,
      );
    if (context) {
      if (!kc.getContextObject(context))
        throw new UserError(
          `context: '${context}' is not in the kubeconfig; it has: ${kc
            .getContexts()
            .map((c) => c.name)
            .join(', ')}`,
        );
      kc.setCurrentContext(context);
    }
    if (!kc.getCurrentContext())
      throw new UserError('kubeconfig: no current-context is set; give the context input');
    const ctx = kc.getContextObject(kc.getCurrentContext());
    if (!ctx)
      throw new UserError(`kubeconfig: the current context '${kc.getCurrentContext()}' is not defined`);
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new UserError('kubeconfig: the current context names no cluster');
    let server: URL;
    try {
      server = new URL(cluster.server);
    } catch {
      throw new UserError(`kubeconfig: cluster '${cluster.name}': server is not a URL`);
    }
    if (server.protocol !== 'https:' && server.protocol !== 'http:')
      throw new UserError(`kubeconfig: cluster '${cluster.name}': server must be an https:// or http:// URL`);

    let proxy: URL | undefined;
    let socks = false;
    if (cluster.proxyUrl) {
      try {
        proxy = new URL(cluster.proxyUrl);
      } catch {
        throw new UserError(`kubeconfig: cluster '${cluster.name}': proxy-url is not a URL`);
      }
      socks = /^socks/.test(proxy.protocol);
      if (socks) proxy = undefined;
      else if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:')
        throw new UserError(
          `kubeconfig: cluster '${cluster.name}': proxy-url must be http://, https:// or socks5://`,
        );
    }

    const user = kc.getCurrentUser();
    const oidc = user?.authProvider?.name === 'oidc' ? new OidcTokens(user) : undefined;
    let authUser: User = user ? execUser(user, cluster, userDirs.get(user.name)) : { name: 'anonymous' };
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
    const via = proxy ? ` through the proxy ${shown(proxy)}` : '';
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
        socket = await tunnel(proxy, url, creds.tls, signal);
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

/** Reads the files in order and merges them as kubectl does: the first to name a cluster, user or context, or to set current-context, wins. */
function loadMerged(
  kc: KubeConfig,
  files: string[],
  userDirs: Map<string, string>,
  fresh: () => KubeConfig,
): void {
  const clusters = new Map<string, Cluster>();
  const users = new Map<string, User>();
  const contexts = new Map<string, Context>();
  let current: string | undefined;
  for (const file of files) {
    const one = fresh();
    try {
      // A file with nothing in it is an empty config to kubectl, not an error.
      if (!fs.readFileSync(file, 'utf8').replace(/#.*$/gm, '').trim()) continue;
      one.loadFromFile(file);
    } catch (error) {
      const e = error as { name?: string; reason?: string; mark?: { line?: number } };
      // js-yaml's message quotes the file around the fault, and a kubeconfig holds secrets.
      const why =
        e.name === 'YAMLException'
          ? `not valid YAML (${e.reason ?? 'syntax error'}${e.mark?.line !== undefined ? ` at line ${e.mark.line + 1}` : ''})`
          : messageOf(error);
      throw new UserError(`kubeconfig: cannot read ${file}: ${why}`);
    }
    for (const c of one.getClusters()) if (!clusters.has(c.name)) clusters.set(c.name, c);
    for (const u of one.getUsers())
      if (!users.has(u.name)) {
        users.set(u.name, u);
        userDirs.set(u.name, path.dirname(path.resolve(file)));
      }
    for (const c of one.getContexts()) if (!contexts.has(c.name)) contexts.set(c.name, c);
    current ||= one.getCurrentContext() || undefined;
  }
  kc.loadFromOptions({
    clusters: [...clusters.values()],
    users: [...users.values()],
    contexts: [...contexts.values()],
    currentContext: current,
  });
}

/**
 * The user as client-go runs its exec plugin: a relative command with a slash is resolved
 * from the kubeconfig's folder, and KUBERNETES_EXEC_INFO tells the plugin what is asked.
 */
function execUser(user: User, cluster: Cluster, dir: string | undefined): User {
  const exec = user.exec as
    | {
        command?: string;
        env?: { name: string; value: string }[] | null;
        apiVersion?: string;
        provideClusterInfo?: boolean;
      }
    | undefined
    | null;
  if (!exec) return user;
  let command = exec.command;
  if (command && dir && !path.isAbsolute(command) && command.includes('/')) command = path.join(dir, command);
  let ca = cluster.caData;
  if (!ca && cluster.caFile) {
    try {
      ca = fs.readFileSync(cluster.caFile).toString('base64');
    } catch {}
  }
  const info = {
    apiVersion: exec.apiVersion ?? 'client.authentication.k8s.io/v1beta1',
    kind: 'ExecCredential',
    spec: {
      interactive: false,
      ...(exec.provideClusterInfo
        ? {
            cluster: {
              server: cluster.server,
              ...(cluster.tlsServerName ? { 'tls-server-name': cluster.tlsServerName } : {}),
              ...(ca ? { 'certificate-authority-data': ca } : {}),
              ...(cluster.skipTLSVerify ? { 'insecure-skip-tls-verify': true } : {}),
              ...(cluster.proxyUrl ? { 'proxy-url': cluster.proxyUrl } : {}),
            },
          }
        : {}),
    },
  };
  const env = [...(exec.env ?? []), { name: 'KUBERNETES_EXEC_INFO', value: JSON.stringify(info) }];
  return { ...user, exec: { ...exec, command, env } };
}

/**
 * An OIDC auth-provider's id-token, refreshed as client-go's oidc provider does: used until 10 s
 * before its `exp`, then exchanged with the refresh-token at the issuer's token endpoint
 * (found by OpenID discovery, trusting idp-certificate-authority(-data) when given). The new
 * tokens are kept in memory; unlike kubectl, the kubeconfig file is not rewritten.
 * (@kubernetes/client-node 2.0.1's own refresh fails: it hands openid-client a string for a URL.)
 */
class OidcTokens {
  private readonly user: string;
  private readonly config: Record<string, string | undefined>;
  private idToken: string | undefined;
  private refreshToken: string | undefined;
  private stale = false;
  private tokenEndpoint: string | undefined;

  constructor(user: User) {
    this.user = user.name;
    this.config = (user.authProvider as { config?: Record<string, string> }).config ?? {};
    this.idToken = this.config['id-token'];
    this.refreshToken = this.config['refresh-token'];
  }

  /** After a 401: the id-token is refreshed before it is sent again. */
  expire(): void {
    this.stale = true;
  }

  async token(): Promise<string> {
    const exp = this.idToken ? jwtExpiry(this.idToken) : 0;
    if (this.idToken && !this.stale && (exp === undefined || exp * 1000 > Date.now() + 10_000))
      return this.idToken;
    const why = this.stale ? 'the server refused it' : this.idToken ? 'it expired' : 'there is none';
    const fail = (what: string) =>
      new UserError(`kubeconfig: user '${this.user}': cannot refresh the OIDC id-token (${why}): ${what}`);
    const issuer = this.config['idp-issuer-url'];
    const clientId = this.config['client-id'];
    if (!this.refreshToken || !issuer || !clientId)
      throw fail('refreshing needs refresh-token, idp-issuer-url and client-id in its auth-provider config');
    const ca = this.config['idp-certificate-authority']
      ? fs.readFileSync(this.config['idp-certificate-authority'])
      : this.config['idp-certificate-authority-data']
        ? Buffer.from(this.config['idp-certificate-authority-data'], 'base64')
        : undefined;
    if (!this.tokenEndpoint) {
      const discovery = await fetchJson(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`, ca);
      const endpoint = (discovery.json as { token_endpoint?: unknown } | undefined)?.token_endpoint;
      if (discovery.code !== 200 || typeof endpoint !== 'string')
        throw fail(
          `the issuer's OpenID discovery answered ${discovery.code || discovery.error} without a token_endpoint`,
        );
      this.tokenEndpoint = endpoint;
    }
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: this.refreshToken });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    const secret = this.config['client-secret'];
    if (secret)
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
    else form.set('client_id', clientId);
    const answer = await fetchJson(this.tokenEndpoint, ca, {
      method: 'POST',
      headers,
      body: form.toString(),
    });
    const body = (answer.json ?? {}) as { id_token?: unknown; refresh_token?: unknown; error?: unknown };
    if (answer.code !== 200)
      throw fail(
        `the token endpoint answered ${answer.code || answer.error}${typeof body.error === 'string' ? ` (${body.error.slice(0, 100)})` : ''}`,
      );
    if (typeof body.id_token !== 'string') throw fail('the token endpoint gave no id_token');
    this.idToken = body.id_token;
    if (typeof body.refresh_token === 'string') this.refreshToken = body.refresh_token;
    this.stale = false;
    return this.idToken;
  }
}

/** A JWT's exp claim (seconds), or undefined when it has none or is no JWT. */
function jwtExpiry(token: string): number | undefined {
  try {
    const exp = (
      JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { exp?: unknown }
    ).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** One small JSON request (the OIDC issuer's), its status (0 when it could not be made) and JSON body. */
function fetchJson(
  url: string,
  ca: Buffer | undefined,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ code: number; json?: unknown; error?: string }> {
  return new Promise((resolve) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      resolve({ code: 0, error: 'not a URL' });
      return;
    }
    const transport = target.protocol === 'http:' ? http : https;
    const req = transport.request(
      target,
      {
        method: init.method ?? 'GET',
        headers: { accept: 'application/json', ...init.headers },
        ...(ca && target.protocol === 'https:' ? { ca } : {}),
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (error) => resolve({ code: 0, error: error.message }));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {}
          resolve({ code: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer in 30 s')));
    req.on('error', (error) => resolve({ code: 0, error: `cannot reach ${target.host}: ${error.message}` }));
    req.end(init.body);
  });
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

/** The proxy without its user and password, for messages. */
function shown(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}`;
}

function proxyAuthorization(proxy: URL): Record<string, string> {
  if (!proxy.username && !proxy.password) return {};
  const pair = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return { 'proxy-authorization': `Basic ${Buffer.from(pair).toString('base64')}` };
}

const bare = (host: string) => host.replace(/^\[|\]$/g, '');

/** A TLS connection to `target` through an HTTP CONNECT tunnel of the proxy. */
function tunnel(proxy: URL, target: URL, t: TlsMaterial, signal: AbortSignal | undefined): Promise<Duplex> {
  const authority = `${target.hostname}:${target.port || 443}`;
  return new Promise((resolve, reject) => {
    const req = (proxy.protocol === 'https:' ? https : http).request({
      host: bare(proxy.hostname),
      port: proxy.port || (proxy.protocol === 'https:' ? 443 : 80),
      method: 'CONNECT',
      path: authority,
      headers: { host: authority, ...proxyAuthorization(proxy) },
      agent: false,
      signal,
    });
    req.once('connect', (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        reject(
          new Error(
            `the proxy answered ${res.statusCode} ${res.statusMessage ?? ''} to CONNECT ${authority}`,
          ),
        );
        return;
      }
      if (head.length) socket.unshift(head);
      const host = bare(target.hostname);
      const secure = tls.connect({
        ...tlsOptions(t),
        socket,
        host,
        servername: t.servername ?? (net.isIP(host) ? undefined : host),
      });
      resolve(secure);
    });
    req.once('error', reject);
    req.end();
  });
}

/**
 * The proxy of HTTPS_PROXY (https servers) or HTTP_PROXY (http servers), upper case first, as
 * Go's net/http reads them: never for localhost or loopback addresses, nor for a host that
 * NO_PROXY names (`*`, IPs, CIDRs, domains with their subdomains, each with an optional port).
 */
export function proxyFromEnvironment(target: URL, env: NodeJS.ProcessEnv = process.env): URL | undefined {
  const name = target.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY';
  const raw = env[name] || env[name.toLowerCase()];
  if (!raw) return undefined;
  const host = bare(target.hostname).toLowerCase();
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  if (host === 'localhost') return undefined;
  const ip = net.isIP(host);
  if (ip && loopback(host)) return undefined;
  for (let entry of (env.NO_PROXY || env.no_proxy || '').split(',')) {
    entry = entry.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return undefined;
    const cidr = /^(.+)\/(\d+)$/.exec(entry);
    if (cidr && net.isIP(cidr[1]!)) {
      if (ip) {
        const list = new net.BlockList();
        const family = net.isIP(cidr[1]!) === 4 ? 'ipv4' : 'ipv6';
        try {
          list.addSubnet(cidr[1]!, Number(cidr[2]), family);
          if (list.check(host, ip === 4 ? 'ipv4' : 'ipv6')) return undefined;
        } catch {}
      }
      continue;
    }
    let entryHost = entry;
    let entryPort = '';
    const withPort = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(entry);
    if (withPort) {
      entryHost = bare(withPort[1]!);
      entryPort = withPort[2]!;
      if (!entryHost) continue;
    }
    if (entryPort && entryPort !== port) continue;
    if (net.isIP(entryHost)) {
      if (ip && sameIp(entryHost, host)) return undefined;
      continue;
    }
    if (entryHost.startsWith('*.')) entryHost = entryHost.slice(1);
    if (
      entryHost.startsWith('.')
        ? host.endsWith(entryHost)
        : host === entryHost || host.endsWith(`.${entryHost}`)
    )
      return undefined;
  }
  try {
    const proxy = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`);
    if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:')
      throw new UserError(`${name}: Lifeboat's Kubernetes client takes http:// and https:// proxies only`);
    return proxy;
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw new UserError(`${name}: not a proxy URL`);
  }
}

function loopback(ip: string): boolean {
  if (net.isIP(ip) === 4) return ip.startsWith('127.');
  const list = new net.BlockList();
  list.addAddress('::1', 'ipv6');
  list.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');
  return list.check(ip, 'ipv6');
}

function sameIp(a: string, b: string): boolean {
  const family = net.isIP(a);
  if (family !== net.isIP(b)) return false;
  const list = new net.BlockList();
  list.addAddress(a, family === 4 ? 'ipv4' : 'ipv6');
  return list.check(b, family === 4 ? 'ipv4' : 'ipv6');
}
