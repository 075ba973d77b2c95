/**
 * Proxies for the Kubernetes client, chosen as kubectl chooses them: the cluster's proxy-url,
 * else HTTPS_PROXY / HTTP_PROXY unless NO_PROXY (or a loopback address) rules them out; the
 * HTTP CONNECT tunnel to an https server, and the proxy's Basic authorization.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Cluster } from '@kubernetes/client-node';
import { UserError } from '../errors.ts';

/**
 * The cluster's proxy-url: an http(s) proxy, or `socks` when it is a SOCKS proxy (whose agent
 * @kubernetes/client-node makes); neither when it has none.
 */
export function clusterProxy(cluster: Cluster): { proxy: URL | undefined; socks: boolean } {
  if (!cluster.proxyUrl) return { proxy: undefined, socks: false };
  let proxy: URL;
  try {
    proxy = new URL(cluster.proxyUrl);
  } catch {
    throw new UserError(`kubeconfig: cluster '${cluster.name}': proxy-url is not a URL`);
  }
  if (/^socks/.test(proxy.protocol)) return { proxy: undefined, socks: true };
  if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:')
    throw new UserError(
      `kubeconfig: cluster '${cluster.name}': proxy-url must be http://, https:// or socks5://`,
    );
  return { proxy, socks: false };
}

/** The Proxy-Authorization header for the proxy URL's user and password, none without them. */
export function proxyAuthorization(proxy: URL): Record<string, string> {
  if (!proxy.username && !proxy.password) return {};
  const pair = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return { 'proxy-authorization': `Basic ${Buffer.from(pair).toString('base64')}` };
}

const bare = (host: string) => host.replace(/^\[|\]$/g, '');

/** A TLS connection to `target` through an HTTP CONNECT tunnel of the proxy. */
export function tunnel(
  proxy: URL,
  target: URL,
  options: tls.ConnectionOptions,
  signal: AbortSignal | undefined,
): Promise<Duplex> {
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
        ...options,
        socket,
        host,
        servername: options.servername ?? (net.isIP(host) ? undefined : host),
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
