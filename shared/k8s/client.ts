import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { UserError } from '../errors.ts';

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

/**
 * Talks to the API server with raw JSON: objects come back exactly as the server sent them,
 * no field lost to typed models. Authentication (tokens, client certificates, exec plugins,
 * in-cluster service accounts) comes from @kubernetes/client-node's KubeConfig.
 */
export class KubeClient {
  readonly server: string;
  private readonly options: https.RequestOptions;

  private constructor(server: string, options: https.RequestOptions) {
    this.server = server.replace(/\/$/, '');
    this.options = options;
  }

  /**
   * From a kubeconfig file (the `kubeconfig` input, else KUBECONFIG, else ~/.kube/config),
   * or in-cluster when none exists and the pod has a service account.
   */
  static async open(kubeconfig?: string, context?: string): Promise<KubeClient> {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    const file = kubeconfig ?? process.env.KUBECONFIG?.split(':')[0] ?? `${process.env.HOME}/.kube/config`;
    if (fs.existsSync(file)) kc.loadFromFile(file);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else
      throw new UserError(
        `kubeconfig: no kubeconfig at ${file} and not running in a cluster; give the kubeconfig input or set KUBECONFIG`,
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
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new UserError('kubeconfig: the current context names no cluster');
    const options: https.RequestOptions = { headers: {} };
    await kc.applyToHTTPSOptions(options);
    return new KubeClient(cluster.server, options);
  }

  /** One request; a non-2xx answer becomes a KubeError with the server's reason. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const url = new URL(this.server + path);
    const transport = url.protocol === 'http:' ? http : https;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = transport.request(
        url,
        {
          ...this.options,
          method,
          signal,
          headers: {
            ...(this.options.headers as Record<string, string>),
            accept: 'application/json',
            ...(payload
              ? { 'content-type': 'application/json', 'content-length': String(payload.length) }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const code = res.statusCode ?? 0;
            if (code >= 200 && code < 300) {
              try {
                resolve(JSON.parse(text) as T);
              } catch {
                reject(
                  new KubeError(code, 'BadResponse', `${method} ${path}: the server's answer is not JSON`),
                );
              }
              return;
            }
            let reason = res.statusMessage ?? 'Error';
            let message = text.slice(0, 300);
            try {
              const status = JSON.parse(text) as { reason?: string; message?: string };
              reason = status.reason ?? reason;
              message = status.message ?? message;
            } catch {}
            reject(new KubeError(code, reason, `${method} ${path}: ${code} ${reason}: ${message}`));
          });
        },
      );
      req.on('error', (error) =>
        reject(
          signal?.aborted
            ? error
            : new UserError(`kubeconfig: cannot reach the API server ${this.server} (${error.message})`),
        ),
      );
      req.end(payload);
    });
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', path, undefined, signal);
  }
}
